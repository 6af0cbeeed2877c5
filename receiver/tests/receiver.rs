//! End-to-end tests of the real `ferry-receiver` binary on loopback: every status code and
//! header of the write path, what the read API returns, tenants, auth, limits, chunking and checkpoints, and
//! durability across `kill -9`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_protocol::codec::{Encoder, decode_body};
use ferry_protocol::headers::{CONTENT_TYPE_RW2, EXEMPLARS_WRITTEN, HISTOGRAMS_WRITTEN, SAMPLES_WRITTEN};
use ferry_protocol::read::{LabelMatcher, MatchType, Query, ReadRequest, ReadResponse};
use ferry_protocol::rw2::histogram::{Count, ZeroCount};
use ferry_protocol::stale::STALE_NAN_BITS;
use ferry_protocol::{STALE_NAN, rw1, rw2};
use prost::Message;

// ---------------------------------------------------------------------------------------------
// Harness.

struct Receiver {
    child: Child,
    addr: String,
    dir: std::path::PathBuf,
    config: Option<String>,
    extra: Vec<String>,
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let d = std::env::temp_dir().join(format!("ferry-receiver-test-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Receiver {
    fn start(tag: &str, config: Option<&str>, extra: &[&str]) -> Receiver {
        let dir = tmpdir(tag);
        let mut r = Receiver {
            child: Command::new("true").spawn().unwrap(),
            addr: String::new(),
            dir,
            config: config.map(str::to_owned),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry-receiver"));
        cmd.arg("--web.listen-address=127.0.0.1:0")
            .arg(format!("--storage.path={}", self.dir.join("data").display()))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(c) = &self.config {
            let p = self.dir.join("receiver.yaml");
            std::fs::write(&p, c).unwrap();
            cmd.arg(format!("--config.file={}", p.display()));
        }
        let mut child = cmd.spawn().expect("start ferry-receiver");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && line.contains("listening") {
                    let addr =
                        line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
                    let _ = tx.send(addr);
                    sent = true;
                }
                if std::env::var_os("FERRY_TEST_LOGS").is_some() {
                    eprintln!("[receiver] {line}");
                }
            }
        });
        // Own the child before anything can panic, so a failed start leaves no process behind.
        self.child = child;
        self.addr = rx.recv_timeout(Duration::from_secs(30)).expect("receiver did not start");
    }

    /// SIGKILL, then start again on the same store.
    fn kill9_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.spawn();
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        Resp::parse(&raw)
    }

    fn write(&self, proto: &str, body: &[u8], extra: &[(&str, &str)]) -> Resp {
        let mut h = vec![("Content-Encoding", "snappy"), ("Content-Type", proto)];
        h.extend_from_slice(extra);
        self.request("POST", "/api/v1/write", &h, body)
    }

    fn get(&self, path: &str, extra: &[(&str, &str)]) -> Resp {
        self.request("GET", path, extra, b"")
    }

    fn export(&self, selector: &str, extra: &[(&str, &str)]) -> Vec<serde_json::Value> {
        let r = self.get(&format!("/api/v1/export?match[]={}", enc(selector)), extra);
        assert_eq!(r.status, 200, "{}", r.text());
        r.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn parse(raw: &[u8]) -> Resp {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("header end") + 4;
        let head = String::from_utf8_lossy(&raw[..split]);
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = raw[split..].to_vec();
        if headers.iter().any(|(k, v)| k == "transfer-encoding" && v == "chunked") {
            body = dechunk(&body);
        }
        Resp { status, headers, body }
    }
    fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    fn written(&self) -> (Option<u64>, Option<u64>, Option<u64>) {
        let n = |h| self.header(h).map(|v| v.parse().unwrap());
        (n(SAMPLES_WRITTEN), n(HISTOGRAMS_WRITTEN), n(EXEMPLARS_WRITTEN))
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn rw1_series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> rw1::TimeSeries {
    rw1::TimeSeries {
        labels: labels.iter().map(|(n, v)| rw1::Label::new(*n, *v)).collect(),
        samples: samples.iter().map(|&(timestamp, value)| rw1::Sample { value, timestamp }).collect(),
        ..Default::default()
    }
}

fn rw1_body(series: Vec<rw1::TimeSeries>) -> Vec<u8> {
    Encoder::default().encode(&rw1::WriteRequest { timeseries: series, metadata: vec![] })
}

/// An RW2 request builder that interns strings itself, in the order given (so refs can be
/// deliberately unsorted).
#[derive(Default)]
struct V2 {
    req: rw2::Request,
}

impl V2 {
    fn sym(&mut self, s: &str) -> u32 {
        if self.req.symbols.is_empty() {
            self.req.symbols.push(String::new());
        }
        match self.req.symbols.iter().position(|x| x == s) {
            Some(i) => i as u32,
            None => {
                self.req.symbols.push(s.to_owned());
                (self.req.symbols.len() - 1) as u32
            }
        }
    }
    fn refs(&mut self, labels: &[(&str, &str)]) -> Vec<u32> {
        labels.iter().flat_map(|(n, v)| [self.sym(n), self.sym(v)]).collect()
    }
    fn series(&mut self, labels: &[(&str, &str)], samples: &[(i64, f64)]) -> &mut rw2::TimeSeries {
        let labels_refs = self.refs(labels);
        self.req.timeseries.push(rw2::TimeSeries {
            labels_refs,
            samples: samples
                .iter()
                .map(|&(timestamp, value)| rw2::Sample { value, timestamp, start_timestamp: 0 })
                .collect(),
            ..Default::default()
        });
        self.req.timeseries.last_mut().unwrap()
    }
    fn body(&mut self) -> Vec<u8> {
        self.sym("");
        Encoder::default().encode(&self.req)
    }
}

fn remote_read(r: &Receiver, name: &str, start: i64, end: i64) -> ReadResponse {
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers: vec![LabelMatcher {
                r#type: MatchType::Eq as i32,
                name: "__name__".into(),
                value: name.into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![0],
    };
    let body = Encoder::default().encode(&req);
    let resp = r.request(
        "POST",
        "/api/v1/read",
        &[("Content-Type", "application/x-protobuf"), ("Content-Encoding", "snappy")],
        &body,
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    decode_body(&resp.body, 64 << 20).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Write path.

#[test]
fn rw1_write_is_stored_and_stale_markers_read_back_bit_exact() {
    let r = Receiver::start("rw1", None, &[]);
    let t = now() - 60_000;
    let body = rw1_body(vec![
        rw1_series(
            &[("__name__", "up"), ("job", "node"), ("instance", "a:9100")],
            &[(t, 1.0), (t + 15_000, STALE_NAN)],
        ),
        // Unsorted labels and an empty value: sorted, the empty one dropped.
        rw1_series(
            &[("job", "node"), ("__name__", "temp"), ("empty", "")],
            &[(t, f64::NAN), (t + 1, f64::INFINITY)],
        ),
    ]);
    let resp = r.write("application/x-protobuf", &body, &[("X-Prometheus-Remote-Write-Version", "0.1.0")]);
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert!(resp.body.is_empty());
    assert_eq!(resp.written(), (None, None, None), "RW1 answers carry no Written headers");

    let rr = remote_read(&r, "up", t - 1, t + 20_000);
    let ts = &rr.results[0].timeseries;
    assert_eq!(ts.len(), 1);
    let names: Vec<_> = ts[0].labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["__name__", "instance", "job"]);
    assert_eq!(ts[0].samples[0].value, 1.0);
    assert_eq!(ts[0].samples[1].value.to_bits(), STALE_NAN_BITS, "stale marker must survive bit-exact");

    let rr = remote_read(&r, "temp", t - 1, t + 20_000);
    let s = &rr.results[0].timeseries[0];
    assert!(s.labels.iter().all(|l| l.name != "empty"));
    assert_eq!(s.samples[0].value.to_bits(), f64::NAN.to_bits(), "an ordinary NaN stays an ordinary NaN");
    assert_eq!(s.samples[1].value, f64::INFINITY);

    let lines = r.export("up", &[]);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["values"], serde_json::json!(["1", "StaleNaN"]));
    assert_eq!(lines[0]["timestamps"], serde_json::json!([t, t + 15_000]));
}

#[test]
fn rw2_answers_exact_written_counts_and_accepts_unsorted_refs() {
    let r = Receiver::start("rw2", None, &[]);
    let t = now() - 10_000;
    let mut v2 = V2::default();
    // Refs deliberately unsorted (job before __name__), as the compliance suite sends them.
    let s = v2.series(&[("job", "api"), ("__name__", "http_requests_total")], &[(t, 10.0), (t + 1000, 12.0)]);
    s.metadata = Some(rw2::Metadata { r#type: rw2::MetricType::Counter as i32, help_ref: 0, unit_ref: 0 });
    let (trace, id) = (v2.sym("trace_id"), v2.sym("abc123"));
    let help = v2.sym("Requests served.");
    let ts = v2.req.timeseries.last_mut().unwrap();
    ts.exemplars.push(rw2::Exemplar { labels_refs: vec![trace, id], value: 10.0, timestamp: t });
    ts.metadata.as_mut().unwrap().help_ref = help;
    let hs = v2.series(&[("__name__", "latency"), ("job", "api")], &[]);
    hs.histograms.push(rw2::Histogram {
        count: Some(Count::CountInt(3)),
        sum: 4.5,
        schema: 0,
        zero_count: Some(ZeroCount::ZeroCountInt(1)),
        positive_spans: vec![rw2::BucketSpan { offset: 0, length: 2 }],
        positive_deltas: vec![1, 0],
        timestamp: t,
        ..Default::default()
    });
    let resp = r.write(CONTENT_TYPE_RW2, &v2.body(), &[("X-Prometheus-Remote-Write-Version", "2.0.0")]);
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert_eq!(resp.written(), (Some(2), Some(1), Some(1)));

    let series = r.get(&format!("/api/v1/series?match[]={}", enc("{job=\"api\"}")), &[]).json();
    assert_eq!(
        series["data"],
        serde_json::json!([
            {"__name__": "http_requests_total", "job": "api"},
            {"__name__": "latency", "job": "api"},
        ])
    );
    let md = r.get("/api/v1/metadata?metric=http_requests_total", &[]).json();
    assert_eq!(md["data"]["http_requests_total"][0]["type"], "counter");
    assert_eq!(md["data"]["http_requests_total"][0]["help"], "Requests served.");
    let lines = r.export("latency", &[]);
    assert_eq!(lines[0]["histograms"][0]["count"], 3.0);

    // The same request again is an exact re-send: accepted with the same counts, although its
    // first sample is older than the series' newest (Prometheus would answer 400 here).
    let resp = r.write(CONTENT_TYPE_RW2, &v2.body(), &[]);
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert_eq!(resp.written(), (Some(2), Some(1), Some(1)));
    assert_eq!(r.export("http_requests_total", &[])[0]["values"], serde_json::json!(["10", "12"]));
}

#[test]
fn header_checks_come_before_the_body() {
    let r = Receiver::start("headers", None, &[]);
    let mut good = rw1_body(vec![rw1_series(&[("__name__", "m")], &[(now(), 1.0)])]);
    // Unsupported content types and encodings are 415 even with a corrupt body.
    let mut corrupt = good.clone();
    corrupt[0] = b'0';
    for ct in ["application/json", "image/png", "application/x-protobuf;proto=yolo"] {
        let resp = r.write(ct, &corrupt, &[]);
        assert_eq!(resp.status, 415, "{ct}: {}", resp.text());
        assert_eq!(resp.written(), (None, None, None), "no Written headers before negotiation succeeds");
        assert!(!resp.text().is_empty(), "415 needs a human-readable body");
    }
    for ce in ["gzip", "deflate", "zstd"] {
        let resp = r.request(
            "POST",
            "/api/v1/write",
            &[("Content-Type", CONTENT_TYPE_RW2), ("Content-Encoding", ce)],
            &corrupt,
        );
        assert_eq!(resp.status, 415, "{ce}");
    }
    // RW2 content type with a corrupt body: 400, with Written headers (negotiation succeeded).
    let resp = r.write(CONTENT_TYPE_RW2, &corrupt, &[]);
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.written(), (Some(0), Some(0), Some(0)));
    // Whitespace before proto= is allowed by RFC 9110.
    let mut v2 = V2::default();
    v2.series(&[("__name__", "spaced")], &[(now(), 1.0)]);
    let resp = r.write("application/x-protobuf; proto=io.prometheus.write.v2.Request", &v2.body(), &[]);
    assert_eq!((resp.status, resp.written().0), (204, Some(1)), "{}", resp.text());
    // No headers at all: RW1, snappy assumed.
    good = rw1_body(vec![rw1_series(&[("__name__", "bare")], &[(now(), 1.0)])]);
    let resp = r.request("POST", "/api/v1/write", &[], &good);
    assert_eq!(resp.status, 204, "{}", resp.text());
    // Framed snappy is refused with a message that says so.
    let mut w = snap::write::FrameEncoder::new(Vec::new());
    let one = rw1::WriteRequest {
        timeseries: vec![rw1_series(&[("__name__", "f")], &[(now(), 1.0)])],
        metadata: vec![],
    };
    w.write_all(&one.encode_to_vec()).unwrap();
    let resp = r.write("application/x-protobuf", &w.into_inner().unwrap(), &[]);
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("framed"), "{}", resp.text());
    // Wrong method.
    assert_eq!(r.get("/api/v1/write", &[]).status, 405);
}

#[test]
fn oversize_bodies_are_413() {
    let r = Receiver::start("size", Some("max_request_bytes: 2048\n"), &[]);
    // Label values from an LCG: snappy cannot shrink them much.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let big: Vec<_> = (0..200)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            rw1_series(&[("__name__", "m"), ("i", &format!("{x:x}{:x}", x.rotate_left(17)))], &[(now(), 1.0)])
        })
        .collect();
    let body = rw1_body(big);
    assert!(body.len() > 2048);
    let resp = r.write("application/x-protobuf", &body, &[]);
    assert_eq!(resp.status, 413, "{}", resp.text());
    // Small on the wire, large once decompressed.
    let zeros: Vec<_> =
        (0..100).map(|_| rw1_series(&[("__name__", "m"), ("v", &"0".repeat(100))], &[(1, 0.0)])).collect();
    let body = rw1_body(zeros);
    assert!(body.len() < 2048, "{}", body.len());
    let resp = r.write("application/x-protobuf", &body, &[]);
    assert_eq!(resp.status, 413, "{}", resp.text());
}

#[test]
fn partial_writes_commit_valid_series_and_name_every_rejected_one() {
    let r = Receiver::start("partial", None, &[]);
    let t = now();
    let mut v2 = V2::default();
    v2.series(&[("__name__", "good")], &[(t, 1.0)]);
    v2.series(&[("job", "no-name")], &[(t, 1.0)]);
    v2.series(&[("__name__", "dup"), ("a", "1"), ("a", "2")], &[(t, 1.0)]);
    v2.series(&[("__name__", "empty")], &[]);
    v2.req.timeseries.push(rw2::TimeSeries { labels_refs: vec![1, 2, 3], ..Default::default() });
    v2.req.timeseries.push(rw2::TimeSeries {
        labels_refs: vec![1, 999],
        samples: vec![rw2::Sample { value: 1.0, timestamp: t, start_timestamp: 0 }],
        ..Default::default()
    });
    let resp = r.write(CONTENT_TYPE_RW2, &v2.body(), &[]);
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.written(), (Some(1), Some(0), Some(0)));
    let body = resp.text();
    for needle in [
        "invalid metric name or labels",
        "duplicated label a",
        "at least one sample or histogram",
        "invalid labelRefs length 3",
        "outside of symbols table",
        "5 problem(s)",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in:\n{body}");
    }
    assert_eq!(r.export("good", &[]).len(), 1);
}

#[test]
fn tsdb_semantics_duplicates_out_of_order_and_bounds() {
    let r = Receiver::start("tsdb", None, &[]);
    let t = now() - 3_600_000; // an hour old: must be accepted for a fresh series
    let send = |ts: i64, v: f64| {
        r.write("application/x-protobuf", &rw1_body(vec![rw1_series(&[("__name__", "g")], &[(ts, v)])]), &[])
    };
    assert_eq!(send(t, 1.0).status, 204);
    assert_eq!(send(t, 1.0).status, 204, "exact duplicate is accepted");
    let dup = send(t, 2.0);
    assert_eq!(dup.status, 400);
    assert!(dup.text().contains("duplicate sample for timestamp"), "{}", dup.text());
    let ooo = send(t - 1, 1.0);
    assert_eq!(ooo.status, 400);
    assert!(ooo.text().contains("out of order"), "{}", ooo.text());
    let future = send(now() + 3_600_000, 1.0);
    assert_eq!(future.status, 400);
    assert!(future.text().contains("future"), "{}", future.text());
    let old = send(now() - 30 * 86_400_000, 1.0);
    assert_eq!(old.status, 400, "older than the 15d retention");
    assert_eq!(send(t + 1, 3.0).status, 204);
    assert_eq!(r.export("g", &[])[0]["values"], serde_json::json!(["1", "3"]));
}

#[test]
fn invalid_histograms_are_400_valid_ones_stored() {
    let r = Receiver::start("hist", None, &[]);
    let t = now();
    let mut v2 = V2::default();
    let h = |count| rw2::Histogram {
        count: Some(Count::CountInt(count)),
        sum: 1.0,
        positive_spans: vec![rw2::BucketSpan { offset: 0, length: 1 }],
        positive_deltas: vec![2],
        timestamp: t,
        ..Default::default()
    };
    v2.series(&[("__name__", "bad_h")], &[]).histograms.push(h(99));
    v2.series(&[("__name__", "good_h")], &[]).histograms.push(h(2));
    let resp = r.write(CONTENT_TYPE_RW2, &v2.body(), &[]);
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("observation count"), "{}", resp.text());
    assert_eq!(resp.written(), (Some(0), Some(1), Some(0)));
    assert!(r.export("bad_h", &[]).is_empty());
    assert_eq!(r.export("good_h", &[]).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Read API.

#[test]
fn query_api_shapes() {
    let r = Receiver::start("query", None, &[]);
    let t0 = (now() / 1000 - 600) * 1000;
    let body = rw1_body(vec![
        rw1_series(
            &[("__name__", "m"), ("k", "a")],
            &[(t0, 1.0), (t0 + 60_000, 2.0), (t0 + 120_000, STALE_NAN)],
        ),
        rw1_series(&[("__name__", "m"), ("k", "b")], &[(t0, 5.0)]),
    ]);
    assert_eq!(r.write("application/x-protobuf", &body, &[]).status, 204);
    let secs = |ms: i64| (ms / 1000).to_string();

    let q =
        r.get(&format!("/api/v1/query?query={}&time={}", enc("m{k=\"a\"}"), secs(t0 + 90_000)), &[]).json();
    assert_eq!(q["data"]["resultType"], "vector");
    assert_eq!(q["data"]["result"][0]["value"][1], "2");
    // After the stale marker the series is gone from instant queries.
    let q =
        r.get(&format!("/api/v1/query?query={}&time={}", enc("m{k=\"a\"}"), secs(t0 + 150_000)), &[]).json();
    assert_eq!(q["data"]["result"], serde_json::json!([]));
    // Range selector: raw samples.
    let q = r.get(&format!("/api/v1/query?query={}&time={}", enc("m[5m]"), secs(t0 + 130_000)), &[]).json();
    assert_eq!(q["data"]["resultType"], "matrix");
    assert_eq!(q["data"]["result"][0]["values"].as_array().unwrap().len(), 2);
    assert_eq!(q["data"]["result"][1]["metric"]["k"], "b");
    // Range query with a step.
    let q = r
        .get(
            &format!("/api/v1/query_range?query=m&start={}&end={}&step=60", secs(t0), secs(t0 + 180_000)),
            &[],
        )
        .json();
    let a = &q["data"]["result"][0];
    assert_eq!(a["metric"]["k"], "a");
    assert_eq!(
        a["values"].as_array().unwrap().iter().map(|v| v[1].as_str().unwrap()).collect::<Vec<_>>(),
        ["1", "2"]
    );
    assert_eq!(q["data"]["result"][1]["values"].as_array().unwrap().len(), 4, "k=b looks back 5m");
    // Labels.
    assert_eq!(r.get("/api/v1/labels", &[]).json()["data"], serde_json::json!(["__name__", "k"]));
    assert_eq!(r.get("/api/v1/label/k/values", &[]).json()["data"], serde_json::json!(["a", "b"]));
    // PromQL beyond selectors: a clear 400.
    let bad = r.get(&format!("/api/v1/query?query={}", enc("rate(m[5m])")), &[]);
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("not PromQL functions"));
}

// ---------------------------------------------------------------------------------------------
// Tenants, auth, limits.

#[test]
fn tenants_are_isolated_by_header() {
    let r = Receiver::start("tenants", None, &[]);
    let body = rw1_body(vec![rw1_series(&[("__name__", "m")], &[(now(), 1.0)])]);
    assert_eq!(r.write("application/x-protobuf", &body, &[("X-Scope-OrgID", "team-a")]).status, 204);
    assert_eq!(r.export("m", &[("X-Scope-OrgID", "team-a")]).len(), 1);
    assert!(r.export("m", &[("X-Scope-OrgID", "team-b")]).is_empty());
    assert!(r.export("m", &[]).is_empty(), "default tenant is separate");
    assert_eq!(r.write("application/x-protobuf", &body, &[("X-Scope-OrgID", "bad/tenant")]).status, 400);
}

#[test]
fn auth_maps_credentials_to_tenants_and_the_header_cannot_override() {
    let cfg = "auth:\n  - {bearer_token: tok-a, tenant: a}\n  - {basic_auth: {username: edge, password: pw}, tenant: b}\ntenants:\n  b:\n    enforced_labels: {site: edge1}\n";
    let r = Receiver::start("auth", Some(cfg), &[]);
    let body = rw1_body(vec![rw1_series(&[("__name__", "m")], &[(now(), 1.0)])]);
    assert_eq!(r.write("application/x-protobuf", &body, &[]).status, 401);
    assert_eq!(r.write("application/x-protobuf", &body, &[("Authorization", "Bearer nope")]).status, 401);
    let resp = r.write(
        "application/x-protobuf",
        &body,
        &[("Authorization", "Bearer tok-a"), ("X-Scope-OrgID", "b")],
    );
    assert_eq!(resp.status, 204);
    assert_eq!(r.export("m", &[("Authorization", "Bearer tok-a")]).len(), 1);
    // basic auth "edge:pw"; tenant b enforces site="edge1".
    let basic = ("Authorization", "Basic ZWRnZTpwdw==");
    assert!(r.export("m", &[basic]).is_empty(), "tenant a's data is not visible to b");
    assert_eq!(r.write("application/x-protobuf", &body, &[basic]).status, 204);
    assert_eq!(r.export("m", &[basic])[0]["metric"]["site"], "edge1");
    let clash = rw1_body(vec![rw1_series(&[("__name__", "m"), ("site", "other")], &[(now(), 1.0)])]);
    let resp = r.write("application/x-protobuf", &clash, &[basic]);
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("enforces site"), "{}", resp.text());
    assert_eq!(r.get("/api/v1/labels", &[]).status, 401);
}

#[test]
fn limits_series_labels_and_rate() {
    let cfg = "limits:\n  max_series: 2\n  max_labels_per_series: 3\n  max_label_value_length: 10\n  ingestion_rate: 5\n  ingestion_burst: 5\n";
    let r = Receiver::start("limits", Some(cfg), &[]);
    let t = now();
    let s = |name: &str| rw1_series(&[("__name__", name)], &[(t, 1.0)]);
    let resp = r.write("application/x-protobuf", &rw1_body(vec![s("a"), s("b"), s("c")]), &[]);
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("series limit of 2"), "{}", resp.text());
    let many = rw1_series(&[("__name__", "a"), ("x", "1"), ("y", "2"), ("z", "3")], &[(t, 1.0)]);
    let resp = r.write("application/x-protobuf", &rw1_body(vec![many]), &[]);
    assert!(resp.status == 400 && resp.text().contains("max_labels_per_series"), "{}", resp.text());
    let long = rw1_series(&[("__name__", "a"), ("x", "01234567890")], &[(t, 1.0)]);
    let resp = r.write("application/x-protobuf", &rw1_body(vec![long]), &[]);
    assert!(resp.status == 400 && resp.text().contains("max_label_value_length"), "{}", resp.text());
    // 3 + 0 + 0 points used of a burst of 5; 3 more exceed it.
    let three = rw1_body(vec![rw1_series(&[("__name__", "a")], &[(t + 1, 1.0), (t + 2, 1.0), (t + 3, 1.0)])]);
    let resp = r.write("application/x-protobuf", &three, &[]);
    assert_eq!(resp.status, 429, "{}", resp.text());
    let after: u64 = resp.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&after), "{after}");
}

// ---------------------------------------------------------------------------------------------
// Durability and storage.

#[test]
fn answered_writes_survive_kill_9() {
    let mut r = Receiver::start("kill9", None, &[]);
    let t0 = now() - 600_000;
    // Concurrent writers, each answered before the kill.
    let addr_writes: Vec<_> = (0..4)
        .map(|w| {
            let addr = r.addr.clone();
            std::thread::spawn(move || {
                let rr = Receiver {
                    child: Command::new("true").spawn().unwrap(),
                    addr,
                    dir: tmpdir("client"),
                    config: None,
                    extra: vec![],
                };
                for i in 0..25 {
                    let body = rw1_body(vec![rw1_series(
                        &[("__name__", "k9"), ("w", &w.to_string())],
                        &[(t0 + i * 1000, i as f64)],
                    )]);
                    let resp = rr.write("application/x-protobuf", &body, &[]);
                    assert_eq!(resp.status, 204, "{}", resp.text());
                }
            })
        })
        .collect();
    for h in addr_writes {
        h.join().unwrap();
    }
    r.kill9_and_restart();
    let lines = r.export("k9", &[]);
    assert_eq!(lines.len(), 4);
    for l in &lines {
        assert_eq!(l["values"].as_array().unwrap().len(), 25, "{l}");
    }
    // The head was rebuilt: an out-of-order write is still refused after restart.
    let body = rw1_body(vec![rw1_series(&[("__name__", "k9"), ("w", "0")], &[(t0, 5.0)])]);
    assert_eq!(r.write("application/x-protobuf", &body, &[]).status, 400);
}

#[test]
fn compaction_keeps_every_sample_bit_exact() {
    let mut r = Receiver::start("compact", None, &["--storage.checkpoint-interval=200ms"]);
    let t0 = now() - 3_600_000;
    let values: Vec<f64> = (0..50).map(|i| if i == 49 { STALE_NAN } else { (i as f64) * 1.25 }).collect();
    let samples: Vec<(i64, f64)> =
        values.iter().enumerate().map(|(i, &v)| (t0 + i as i64 * 15_000, v)).collect();
    assert_eq!(
        r.write("application/x-protobuf", &rw1_body(vec![rw1_series(&[("__name__", "c")], &samples)]), &[])
            .status,
        204
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = r.get("/metrics", &[]).text();
        let compacted =
            m.lines().find(|l| l.starts_with("ferry_receiver_checkpointed_log_records_total ")).unwrap();
        if !compacted.ends_with(" 0") {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint happened:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let check = |r: &Receiver| {
        let rr = remote_read(r, "c", t0, t0 + 3_600_000);
        let got: Vec<(i64, u64)> =
            rr.results[0].timeseries[0].samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect();
        let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(got, want);
    };
    check(&r);
    // More samples after compaction: raw and chunked data read together, and survive a crash.
    let more = rw1_body(vec![rw1_series(&[("__name__", "c")], &[(t0 + 50 * 15_000, 7.0)])]);
    assert_eq!(r.write("application/x-protobuf", &more, &[]).status, 204);
    r.kill9_and_restart();
    let rr = remote_read(&r, "c", t0, t0 + 3_600_000);
    assert_eq!(rr.results[0].timeseries[0].samples.len(), 51);
    // Duplicate check against a compacted last sample still works after restart.
    assert_eq!(r.write("application/x-protobuf", &more, &[]).status, 204);
}

#[test]
fn chunk_cuts_and_log_replay_survive_kill_9() {
    // No checkpoint during the test: everything after the cut lives only in the log.
    let mut r = Receiver::start("cuts", None, &["--storage.checkpoint-interval=1h"]);
    let t0 = now() - 3_600_000;
    let n = 300; // two full chunks of 120 and an open one of 60
    for batch in (0..n).collect::<Vec<i64>>().chunks(37) {
        let samples: Vec<(i64, f64)> = batch.iter().map(|&i| (t0 + i * 10_000, i as f64 / 3.0)).collect();
        let body = rw1_body(vec![rw1_series(&[("__name__", "cut")], &samples)]);
        assert_eq!(r.write("application/x-protobuf", &body, &[]).status, 204);
    }
    let want: Vec<(i64, u64)> = (0..n).map(|i| (t0 + i * 10_000, (i as f64 / 3.0).to_bits())).collect();
    let read = |r: &Receiver| -> Vec<(i64, u64)> {
        remote_read(r, "cut", t0, now()).results[0].timeseries[0]
            .samples
            .iter()
            .map(|s| (s.timestamp, s.value.to_bits()))
            .collect()
    };
    assert_eq!(read(&r), want);
    r.kill9_and_restart();
    assert_eq!(read(&r), want, "after replaying the log");
    r.kill9_and_restart();
    assert_eq!(read(&r), want, "after a second restart (replay checkpointed the head)");
    // A re-send of an old, already chunked sample is a duplicate; a different value is not.
    let old = |v: f64| rw1_body(vec![rw1_series(&[("__name__", "cut")], &[(t0 + 10_000, v)])]);
    assert_eq!(r.write("application/x-protobuf", &old(1.0 / 3.0), &[]).status, 204);
    assert_eq!(r.write("application/x-protobuf", &old(9.0), &[]).status, 400);
}

#[test]
fn self_metrics_and_health() {
    let r = Receiver::start("metrics", None, &[]);
    assert_eq!(r.get("/-/healthy", &[]).status, 200);
    assert_eq!(r.get("/-/ready", &[]).status, 200);
    let body = rw1_body(vec![rw1_series(&[("__name__", "m")], &[(now(), 1.0)])]);
    r.write("application/x-protobuf", &body, &[]);
    r.write("application/json", &body, &[]);
    let m = r.get("/metrics", &[]).text();
    assert!(m.contains("ferry_receiver_write_requests_total{proto=\"rw1\",code=\"204\"} 1"), "{m}");
    assert!(m.contains("ferry_receiver_write_requests_total{proto=\"unknown\",code=\"415\"} 1"), "{m}");
    assert!(m.contains("ferry_receiver_samples_written_total 1"), "{m}");
    assert!(m.contains("ferry_receiver_series 1"), "{m}");
}

#[test]
fn bad_config_names_file_line_and_column() {
    let dir = tmpdir("badcfg");
    let p = dir.join("r.yaml");
    std::fs::write(&p, "retention: 1d\nlimits:\n  max_sries: 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-receiver"))
        .arg(format!("--config.file={}", p.display()))
        .arg(format!("--storage.path={}", dir.join("d").display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", p.display())) && err.contains("max_sries"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd).arg(arg).output().is_ok_and(|o| o.status.success())
}

#[test]
fn tls_and_h2c() {
    if !have("openssl", "version") || !have("curl", "--version") {
        eprintln!("skipping tls_and_h2c: needs the openssl and curl commands");
        return;
    }
    // h2c (HTTP/2 with prior knowledge) on a plain receiver.
    let plain = Receiver::start("h2c", None, &[]);
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--http2-prior-knowledge"])
        .arg(format!("http://{}/-/healthy", plain.addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");

    let dir = tmpdir("tls-certs");
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let cfg = format!(
        "tls: {{cert_file: {}, key_file: {}}}\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let r = Receiver::start("tls", Some(&cfg), &[]);
    let curl = |extra: &[&str], path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_version} %{http_code}", "--cacert"])
            .arg(dir.join("cert.pem"))
            .args(extra)
            .arg(format!("https://{}{path}", r.addr))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(curl(&["--http1.1"], "/-/healthy").ends_with("1.1 200"));
    assert!(curl(&["--http2"], "/-/healthy").ends_with("2 200"), "ALPN offers h2");
    // A real write over TLS, then read back.
    let body = rw1_body(vec![rw1_series(&[("__name__", "over_tls")], &[(now(), 7.0)])]);
    std::fs::write(dir.join("body"), &body).unwrap();
    let out = curl(
        &[
            "-H",
            "Content-Type: application/x-protobuf",
            "-H",
            "Content-Encoding: snappy",
            "--data-binary",
            &format!("@{}", dir.join("body").display()),
        ],
        "/api/v1/write",
    );
    assert!(out.ends_with(" 204"), "{out}");
    assert!(curl(&[], "/api/v1/export?match[]=over_tls").contains("\"7\""));
    // Plain HTTP to the TLS port is refused (no data accepted without TLS).
    let plain_try = Command::new("curl")
        .args(["-s", "-m", "3"])
        .arg(format!("http://{}/-/healthy", r.addr))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain_try.stdout).contains("Healthy"));
}

#[test]
fn rw1_histograms_and_exemplars_are_stored_and_readable() {
    let r = Receiver::start("rw1hist", None, &[]);
    let t = now();
    let req = rw1::WriteRequest {
        timeseries: vec![
            rw1::TimeSeries {
                labels: vec![rw1::Label::new("__name__", "rw1_hist")],
                histograms: vec![rw1::Histogram {
                    count: Some(ferry_protocol::rw1::histogram::Count::CountInt(3)),
                    sum: 2.5,
                    positive_spans: vec![rw1::BucketSpan { offset: 0, length: 2 }],
                    positive_deltas: vec![1, 1],
                    timestamp: t,
                    ..Default::default()
                }],
                ..Default::default()
            },
            rw1::TimeSeries {
                labels: vec![rw1::Label::new("__name__", "with_exemplar")],
                samples: vec![rw1::Sample { value: 4.0, timestamp: t }],
                exemplars: vec![rw1::Exemplar {
                    labels: vec![rw1::Label::new("trace_id", "abc")],
                    value: 4.0,
                    timestamp: t,
                }],
                histograms: vec![],
            },
        ],
        metadata: vec![],
    };
    let resp = r.write("application/x-protobuf", &Encoder::default().encode(&req), &[]);
    assert_eq!(resp.status, 204, "{}", resp.text());
    let h = r.export("rw1_hist", &[]);
    assert_eq!(h[0]["histograms"][0]["count"], 3.0);
    assert_eq!(h[0]["histograms"][0]["positive_deltas"], serde_json::json!([1, 1]));
    let e = r.export("with_exemplar", &[]);
    assert_eq!(e[0]["exemplars"][0]["labels"]["trace_id"], "abc");
    assert_eq!(e[0]["exemplars"][0]["value"], "4");
}
