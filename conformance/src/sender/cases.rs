//! The sender cases: what the target exposes, how the receiver answers, and what must be
//! true of the requests that arrived. The classic 19-case suite is here (with its known
//! bugs fixed: per-series rather than global timestamp order, exact stale-marker bits),
//! the RW 2.0 suite's categories, and Ferry extensions marked as such.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ferry_protocol::{WriteProto, headers, is_stale};

use super::sink::{self, Decoded, Reply, Request, Series};
use super::target::{self, Exposition};
use crate::report::Level;

/// What a run left behind.
#[derive(Debug)]
pub struct Obs {
    pub requests: Vec<Arc<Request>>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub proto: WriteProto,
    pub scrapes: usize,
}

impl Obs {
    /// Series of accepted requests, in arrival order.
    pub fn accepted(&self) -> impl Iterator<Item = (&Request, &Series)> {
        self.requests.iter().filter(|r| r.accepted()).flat_map(|r| r.series().iter().map(move |s| (&**r, s)))
    }

    /// (timestamp, value) of every accepted sample of series named `name` whose labels include
    /// `with`, in arrival order. `le` and `quantile` compare as numbers: Prometheus 3 writes
    /// `le="1"` as `le="1.0"`, and both name the same bucket.
    pub fn samples(&self, name: &str, with: &[(&str, &str)]) -> Vec<(i64, f64)> {
        let same = |k: &str, have: Option<&str>, want: &str| match (k, have) {
            ("le" | "quantile", Some(h)) => h == want || h.parse::<f64>().ok() == want.parse::<f64>().ok(),
            (_, h) => h == Some(want),
        };
        self.accepted()
            .filter(|(_, s)| s.name() == name && with.iter().all(|(k, v)| same(k, s.label(k), v)))
            .flat_map(|(_, s)| s.samples.iter().copied())
            .collect()
    }

    fn count_accepted_with(&self, name: &str) -> usize {
        self.requests.iter().filter(|r| r.accepted() && r.series().iter().any(|s| s.name() == name)).count()
    }
}

pub type Check = fn(&Obs) -> Result<(), String>;

/// (series name, labels it must carry, value) that a case expects.
type Expected = (&'static str, &'static [(&'static str, &'static str)], f64);

/// One case.
pub struct Case {
    pub id: &'static str,
    pub level: Level,
    pub clause: &'static str,
    /// Only meaningful for this protocol.
    pub only: Option<WriteProto>,
    /// Longest run. Cases end as soon as `done` holds, so caps are generous: Prometheus starts
    /// ~5 s late (discovery batching) and sends every 5 s (batch_send_deadline).
    pub run_for: Duration,
    /// Ends the run early once it holds (checked after two seconds).
    pub done: fn(&Obs) -> bool,
    pub target: fn() -> target::Script,
    pub sink: fn() -> sink::Script,
    pub check: Check,
    /// Crash the sender (SIGKILL) after this long, and start it again.
    pub crash_at: Option<Duration>,
    /// Empty the file SD file (the target goes away) once this holds.
    pub remove_target_when: Option<fn(&Obs) -> bool>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("id", &self.id).finish()
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

// --- target scripts -------------------------------------------------------------------------

fn fixed(body: &'static str) -> target::Script {
    Arc::new(move |_| Exposition::text(body))
}

fn gauge42() -> target::Script {
    fixed("# HELP gauge A gauge.\n# TYPE gauge gauge\ngauge 42\n")
}

fn now_gauge() -> target::Script {
    Arc::new(|_| Exposition::text(format!("# HELP now The time.\n# TYPE now gauge\nnow {}\n", now_ms())))
}

fn counter() -> target::Script {
    Arc::new(|n| {
        Exposition::text(format!("# HELP counter A counter.\n# TYPE counter counter\ncounter {n}\n"))
    })
}

// --- sink scripts ---------------------------------------------------------------------------

fn accept_all() -> sink::Script {
    Arc::new(|_, _| Reply::ok())
}

fn has(d: &Result<Decoded, String>, name: &str) -> bool {
    d.as_ref().is_ok_and(|d| d.series.iter().any(|s| s.name() == name && !s.samples.is_empty()))
}

/// Answers `reply` to the first `times` requests carrying `name` samples, then accepts.
fn fail_first(name: &'static str, times: usize, reply: fn() -> Reply) -> sink::Script {
    let seen = AtomicUsize::new(0);
    Arc::new(
        move |_, d| {
            if has(d, name) && seen.fetch_add(1, Ordering::SeqCst) < times { reply() } else { Reply::ok() }
        },
    )
}

// --- checks ---------------------------------------------------------------------------------

fn at_least_one(v: &[(i64, f64)], what: &str) -> Result<(), String> {
    if v.is_empty() { Err(format!("no {what} sample arrived")) } else { Ok(()) }
}

fn all_equal(v: &[(i64, f64)], want: f64, what: &str) -> Result<(), String> {
    at_least_one(v, what)?;
    match v.iter().find(|(_, x)| x.to_bits() != want.to_bits() && *x != want) {
        Some((t, x)) => Err(format!("{what} at {t} is {x}, want {want}")),
        None => Ok(()),
    }
}

/// Timestamps of the first request that got `status` and carried `name`.
fn first_refused(o: &Obs, name: &str, status: u16) -> Result<(Instant, Vec<i64>), String> {
    let r = o
        .requests
        .iter()
        .find(|r| r.status == status && r.series().iter().any(|s| s.name() == name))
        .ok_or_else(|| format!("no request with {name} reached the receiver"))?;
    let ts =
        r.series().iter().filter(|s| s.name() == name).flat_map(|s| s.samples.iter().map(|x| x.0)).collect();
    Ok((r.at, ts))
}

/// Later requests (any status) carrying `name` at one of `ts`.
fn resent<'a>(o: &'a Obs, after: Instant, name: &str, ts: &[i64]) -> Vec<&'a Request> {
    o.requests
        .iter()
        .filter(|r| r.at > after)
        .filter(|r| {
            r.series().iter().any(|s| s.name() == name && s.samples.iter().any(|x| ts.contains(&x.0)))
        })
        .map(|r| &**r)
        .collect()
}

fn per_series_increasing(o: &Obs) -> Result<(), String> {
    let mut last: HashMap<Vec<(String, String)>, i64> = HashMap::new();
    for (_, s) in o.accepted() {
        let mut key = s.labels.clone();
        key.sort();
        for &(t, _) in &s.samples {
            if let Some(&prev) = last.get(&key)
                && t <= prev
            {
                return Err(format!("{} went from {prev} to {t} (not increasing)", s.name()));
            }
            last.insert(key.clone(), t);
        }
    }
    Ok(())
}

/// Every series of a classic histogram or summary carries its value, and all arrived the same
/// number of times (a scrape is never delivered in part).
fn whole_family(o: &Obs, want: &[Expected], family: &str) -> Result<(), String> {
    let mut counts = Vec::new();
    for &(name, with, value) in want {
        let v = o.samples(name, with);
        all_equal(&v, value, name)?;
        counts.push(v.len());
    }
    if counts.iter().any(|&c| c != counts[0]) {
        return Err(format!("the {family} series arrived with different sample counts {counts:?}"));
    }
    Ok(())
}

/// The batch answered `status` with a Retry-After of about 3 s (3 s, or a date 4 s ahead
/// with one-second resolution) was sent again, and not before that.
fn retry_after_honoured(o: &Obs, status: u16) -> Result<(), String> {
    let (at, ts) = first_refused(o, "now", status)?;
    match resent(o, at, "now", &ts).first() {
        None => Err(format!("the batch answered {status} with Retry-After was not retried")),
        Some(r) if r.at - at < Duration::from_millis(2800) => {
            Err(format!("retried after {:?}, before the Retry-After it was given", r.at - at))
        }
        Some(_) => Ok(()),
    }
}

/// Every request carries the headers of its protocol: Content-Type (RW1 may leave out
/// `proto=`), `Content-Encoding: snappy`, the version (RW1 exactly 0.1.0, RW2 any 2.0.x) and
/// a User-Agent.
fn spec_headers(o: &Obs, proto: WriteProto) -> Result<(), String> {
    at_least_one(&o.samples("now", &[]), "now")?;
    for r in &o.requests {
        let ct = r.header("content-type").unwrap_or("");
        let compact = ct.replace(' ', "");
        let ct_ok = match proto {
            WriteProto::V1 => {
                ct == headers::CONTENT_TYPE_RW1 || compact == headers::CONTENT_TYPE_RW1_EXPLICIT
            }
            WriteProto::V2 => compact == headers::CONTENT_TYPE_RW2,
        };
        if !ct_ok {
            return Err(format!("Content-Type {ct:?}"));
        }
        if r.header("content-encoding") != Some(headers::CONTENT_ENCODING_SNAPPY) {
            return Err(format!("Content-Encoding {:?}", r.header("content-encoding")));
        }
        let version = r.header("x-prometheus-remote-write-version");
        let version_ok = match proto {
            WriteProto::V1 => version == Some(headers::VERSION_RW1),
            WriteProto::V2 => version.is_some_and(|v| v.starts_with("2.0")),
        };
        if !version_ok {
            let want = if proto == WriteProto::V1 { headers::VERSION_RW1 } else { "2.0.x" };
            return Err(format!("X-Prometheus-Remote-Write-Version {version:?}, want {want}"));
        }
        if r.header("user-agent").is_none_or(str::is_empty) {
            return Err("no User-Agent".into());
        }
    }
    Ok(())
}

fn up_values(o: &Obs) -> Vec<(i64, f64)> {
    o.samples("up", &[("job", "test")])
}

fn ok_when_up(n: usize) -> fn(&Obs) -> bool {
    match n {
        2 => |o| o.count_accepted_with("up") >= 2,
        _ => |o| o.count_accepted_with("up") >= 4,
    }
}

fn never(_: &Obs) -> bool {
    false
}

/// Largest gap between consecutive `up` timestamps (ms), over the run.
fn largest_up_gap(o: &Obs) -> Result<i64, String> {
    let mut ts: Vec<i64> = up_values(o).iter().map(|x| x.0).collect();
    ts.sort_unstable();
    ts.dedup();
    if ts.len() < 4 {
        return Err(format!("only {} up samples arrived", ts.len()));
    }
    Ok(ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0))
}

macro_rules! case {
    ($id:literal, $level:ident, $clause:expr, $only:expr, $secs:literal, $done:expr, $target:expr, $sink:expr, $check:expr) => {
        Case {
            id: $id,
            level: Level::$level,
            clause: $clause,
            only: $only,
            run_for: Duration::from_secs($secs),
            done: $done,
            target: $target,
            sink: $sink,
            check: $check,
            crash_at: None,
            remove_target_when: None,
        }
    };
}

/// Every sender case, in report order.
pub fn all() -> Vec<Case> {
    let v1 = Some(WriteProto::V1);
    let v2 = Some(WriteProto::V2);
    let mut cases = vec![
        // ---- the classic suite (prometheus/compliance remote_write/sender) ----
        case!("counter", Must, "classic #1 Counter", None, 20, ok_when_up(4), counter, accept_all, |o| {
            let v = o.samples("counter", &[]);
            at_least_one(&v, "counter")?;
            for (i, (t, x)) in v.iter().enumerate() {
                if *x != v[0].1 + i as f64 {
                    return Err(format!(
                        "counter sample {i} (t={t}) is {x}: values must go up by one, without gaps, repeats or reordering"
                    ));
                }
            }
            Ok(())
        }),
        case!("gauge", Must, "classic #2 Gauge", None, 20, ok_when_up(4), now_gauge, accept_all, |o| {
            let v = o.samples("now", &[]);
            at_least_one(&v, "now")?;
            match v.iter().find(|(t, x)| ((*t as f64) - x).abs() > 0.01 * (*t as f64)) {
                Some((t, x)) => {
                    Err(format!("now={x} at t={t}: the value is the scrape time, so they must agree"))
                }
                None => Ok(()),
            }
        }),
        case!(
            "histogram",
            Must,
            "classic #3 Histogram",
            None,
            20,
            ok_when_up(4),
            || fixed(
                "# HELP histogram A histogram.\n# TYPE histogram histogram\nhistogram_bucket{le=\"1\"} 1\nhistogram_bucket{le=\"2\"} 2\nhistogram_bucket{le=\"+Inf\"} 2\nhistogram_sum 3\nhistogram_count 2\n"
            ),
            accept_all,
            |o| {
                let want: [Expected; 5] = [
                    ("histogram_bucket", &[("le", "1")], 1.0),
                    ("histogram_bucket", &[("le", "2")], 2.0),
                    ("histogram_bucket", &[("le", "+Inf")], 2.0),
                    ("histogram_sum", &[], 3.0),
                    ("histogram_count", &[], 2.0),
                ];
                whole_family(o, &want, "histogram")
            }
        ),
        case!(
            "summary",
            Must,
            "classic #4 Summary",
            None,
            20,
            ok_when_up(4),
            || fixed(
                "# HELP summary A summary.\n# TYPE summary summary\nsummary{quantile=\"0.5\"} 2\nsummary{quantile=\"0.9\"} 3\nsummary{quantile=\"0.99\"} 3\nsummary_sum 6\nsummary_count 3\n"
            ),
            accept_all,
            |o| {
                let want: [Expected; 5] = [
                    ("summary", &[("quantile", "0.5")], 2.0),
                    ("summary", &[("quantile", "0.9")], 3.0),
                    ("summary", &[("quantile", "0.99")], 3.0),
                    ("summary_sum", &[], 6.0),
                    ("summary_count", &[], 3.0),
                ];
                whole_family(o, &want, "summary")
            }
        ),
        case!("up", Must, "classic #5 Up", None, 20, ok_when_up(2), gauge42, accept_all, |o| all_equal(
            &up_values(o),
            1.0,
            "up{job=\"test\"}"
        )),
        case!(
            "up_invalid_exposition",
            Must,
            "classic #6 Invalid",
            None,
            20,
            ok_when_up(2),
            || fixed("# this is not valid prometheus\n1234notvali}{ 444\n"),
            accept_all,
            |o| all_equal(&up_values(o), 0.0, "up{job=\"test\"}")
        ),
        case!("job_label", Must, "classic #7 JobLabel", None, 20, ok_when_up(2), gauge42, accept_all, |o| {
            at_least_one(&o.samples("gauge", &[("job", "test")]), "gauge{job=\"test\"}")
        }),
        case!(
            "instance_label",
            Must,
            "classic #8 InstanceLabel",
            None,
            20,
            ok_when_up(2),
            gauge42,
            accept_all,
            |o| {
                at_least_one(&o.samples("gauge", &[]), "gauge")?;
                for (_, s) in o.accepted() {
                    let i = s.label("instance").unwrap_or("");
                    let ok = i
                        .strip_prefix("127.0.0.1:")
                        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
                    if !ok {
                        return Err(format!("{} has instance {i:?}, want 127.0.0.1:<port>", s.name()));
                    }
                }
                Ok(())
            }
        ),
        case!(
            "sorted_labels",
            Must,
            "RW 1.0 §Labels / RW 2.0 §Labels: sorted by name",
            None,
            20,
            ok_when_up(2),
            || fixed("# HELP test A gauge\n# TYPE test gauge\ntest{b=\"2\",a=\"1\"} 1.0\n"),
            accept_all,
            |o| {
                at_least_one(&o.samples("test", &[("a", "1"), ("b", "2")]), "test{a=\"1\",b=\"2\"}")?;
                for (_, s) in o.accepted() {
                    if s.labels.windows(2).any(|w| w[0].0 >= w[1].0) {
                        return Err(format!("labels of {} are not sorted by name: {:?}", s.name(), s.labels));
                    }
                }
                Ok(())
            }
        ),
        case!(
            "repeated_labels",
            Must,
            "classic #10 RepeatedLabels; RW §Labels: names unique",
            None,
            20,
            ok_when_up(2),
            || fixed("# HELP test A gauge\n# TYPE test gauge\ntest{a=\"1\",a=\"1\"} 1.0\n"),
            accept_all,
            |o| {
                at_least_one(&up_values(o), "up")?;
                for (_, s) in o.accepted() {
                    let mut names: Vec<&str> = s.labels.iter().map(|l| l.0.as_str()).collect();
                    names.sort_unstable();
                    if names.windows(2).any(|w| w[0] == w[1]) {
                        return Err(format!("{} carries a repeated label name", s.name()));
                    }
                }
                if !o.samples("test", &[]).is_empty() {
                    return Err("test{a=\"1\",a=\"1\"} was sent; the scrape must be rejected".into());
                }
                all_equal(&up_values(o), 0.0, "up")
            }
        ),
        case!(
            "empty_labels",
            Must,
            "classic #11 EmptyLabels; RW §Labels: no empty values",
            None,
            20,
            ok_when_up(2),
            || fixed("# HELP test A gauge\n# TYPE test gauge\ntest{a=\"\"} 1.0\n"),
            accept_all,
            |o| {
                for (_, s) in o.accepted() {
                    if let Some((k, _)) = s.labels.iter().find(|(_, v)| v.is_empty()) {
                        return Err(format!("{} carries label {k:?} with an empty value", s.name()));
                    }
                }
                all_equal(&o.samples("test", &[]), 1.0, "test")
            }
        ),
        case!(
            "name_label",
            Must,
            "classic #12 NameLabel; RW §Labels: __name__",
            None,
            20,
            ok_when_up(2),
            || fixed("{label=\"value\"} 1.0\n"),
            accept_all,
            |o| {
                at_least_one(&up_values(o), "up")?;
                for (_, s) in o.accepted() {
                    if s.name().is_empty() {
                        return Err(format!("a series without __name__ was sent: {:?}", s.labels));
                    }
                }
                Ok(())
            }
        ),
        case!(
            "honor_labels_false",
            Must,
            "classic #13 HonorLabels (exported_ prefix)",
            None,
            20,
            ok_when_up(2),
            || fixed("# HELP test A gauge\n# TYPE test gauge\ntest{job=\"original\",instance=\"foo\"} 1.0\n"),
            accept_all,
            |o| all_equal(
                &o.samples(
                    "test",
                    &[("exported_job", "original"), ("exported_instance", "foo"), ("job", "test")]
                ),
                1.0,
                "test{exported_job=\"original\"}"
            )
        ),
        case!(
            "staleness_disappearing_series",
            Must,
            "classic #14 Staleness: stale marker (exact bits)",
            None,
            20,
            |o| o.samples("stale", &[]).iter().any(|x| is_stale(x.1)),
            || Arc::new(|n| Exposition::text(if n == 0 {
                "# TYPE stale gauge\nstale 1\ngauge 1\n".to_owned()
            } else {
                "gauge 1\n".to_owned()
            })),
            accept_all,
            |o| {
                let v = o.samples("stale", &[]);
                at_least_one(&v, "stale")?;
                if v.iter().any(|x| is_stale(x.1)) {
                    Ok(())
                } else {
                    Err("the series vanished but no stale marker (0x7ff0000000000002) was sent".into())
                }
            }
        ),
        case!(
            "timestamps",
            Must,
            "classic #15 Timestamp (per series, within the run)",
            None,
            20,
            ok_when_up(4),
            gauge42,
            accept_all,
            |o| {
                at_least_one(&o.samples("gauge", &[]), "gauge")?;
                for (_, s) in o.accepted() {
                    if let Some(&(t, _)) =
                        s.samples.iter().find(|(t, _)| *t < o.start_ms - 1000 || *t > o.end_ms + 1000)
                    {
                        return Err(format!(
                            "{} has timestamp {t}, outside the run [{}, {}] (milliseconds?)",
                            s.name(),
                            o.start_ms,
                            o.end_ms
                        ));
                    }
                }
                per_series_increasing(o)
            }
        ),
        case!(
            "headers_rw1",
            Must,
            "RW 1.0 §Protocol: headers",
            v1,
            20,
            ok_when_up(2),
            now_gauge,
            accept_all,
            |o| spec_headers(o, WriteProto::V1)
        ),
        case!(
            "headers_rw2",
            Must,
            "RW 2.0 §Protocol: Content-Type, Content-Encoding, version, User-Agent",
            v2,
            20,
            ok_when_up(2),
            now_gauge,
            accept_all,
            |o| spec_headers(o, WriteProto::V2)
        ),
        case!(
            "ordering_with_slow_receiver",
            Must,
            "classic #17 Ordering: per series in order",
            None,
            20,
            ok_when_up(4),
            || Arc::new(|_| {
                let mut b = String::from("# TYPE test gauge\n");
                for i in 0..200 {
                    b.push_str(&format!("test{{i=\"{i}\"}} 1\n"));
                }
                Exposition::text(b)
            }),
            || {
                let n = AtomicUsize::new(0);
                Arc::new(move |_, _| {
                    let i = n.fetch_add(1, Ordering::SeqCst);
                    Reply { delay: Duration::from_millis((i as u64 * 7919) % 1500), ..Reply::ok() }
                })
            },
            |o| {
                at_least_one(&o.samples("test", &[]), "test")?;
                per_series_increasing(o)
            }
        ),
        case!(
            "retry_on_5xx",
            Must,
            "RW §Retries: MUST retry 5xx (classic #18)",
            None,
            20,
            |o| o.requests.iter().filter(|r| r.series().iter().any(|s| s.name() == "now")).count() >= 3,
            now_gauge,
            || fail_first("now", 1, || Reply::status(500)),
            |o| {
                let (at, ts) = first_refused(o, "now", 500)?;
                if resent(o, at, "now", &ts).iter().any(|r| r.accepted()) {
                    Ok(())
                } else {
                    Err(format!("the samples answered 500 (now at {ts:?}) were never sent again"))
                }
            }
        ),
        case!(
            "no_retry_on_4xx",
            Must,
            "RW §Retries: MUST NOT retry 4xx other than 429 (classic #19)",
            None,
            20,
            ok_when_up(4),
            now_gauge,
            || fail_first("now", 1, || Reply::status(400)),
            |o| {
                let (at, ts) = first_refused(o, "now", 400)?;
                match resent(o, at, "now", &ts).first() {
                    Some(r) => Err(format!("the samples answered 400 were sent again {:?} later", r.at - at)),
                    None => Ok(()),
                }
            }
        ),
        case!(
            "backoff_on_5xx",
            Must,
            "RW §Retries: MUST use a backoff algorithm",
            None,
            20,
            |o| o.requests.iter().filter(|r| r.status == 503).count() >= 4
                && o.count_accepted_with("now") >= 1,
            now_gauge,
            || fail_first("now", 4, || Reply::status(503)),
            |o| {
                let (at, ts) = first_refused(o, "now", 503)?;
                let mut times = vec![at];
                times.extend(resent(o, at, "now", &ts).iter().map(|r| r.at));
                if times.len() < 4 {
                    return Err(format!("only {} attempts of the refused batch arrived", times.len()));
                }
                let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).take(3).collect();
                if gaps[0] < Duration::from_millis(10) {
                    return Err(format!("retried after {:?}: no backoff", gaps[0]));
                }
                if gaps.windows(2).any(|w| w[1] < w[0].mul_f64(0.75)) {
                    return Err(format!("retry gaps {gaps:?} shrink: not a backoff"));
                }
                Ok(())
            }
        ),
        case!(
            "retry_on_429",
            May,
            "RW §Retries: MAY retry 429",
            None,
            20,
            |o| o.requests.iter().filter(|r| r.series().iter().any(|s| s.name() == "now")).count() >= 3,
            now_gauge,
            || fail_first("now", 1, || Reply::status(429)),
            |o| {
                let (at, ts) = first_refused(o, "now", 429)?;
                if resent(o, at, "now", &ts).is_empty() {
                    Err("429 was not retried (allowed: MAY)".into())
                } else {
                    Ok(())
                }
            }
        ),
        case!(
            "retry_after_seconds",
            May,
            "RW 2.0 §Retries: MAY honour Retry-After (seconds)",
            None,
            20,
            |o| o.count_accepted_with("now") >= 2 && o.requests.iter().any(|r| r.status == 429),
            now_gauge,
            || fail_first("now", 1, || Reply {
                headers: vec![("Retry-After".into(), "3".into())],
                ..Reply::status(429)
            }),
            |o| retry_after_honoured(o, 429)
        ),
        case!(
            "retry_after_http_date",
            May,
            "RW 2.0 §Retries: MAY honour Retry-After (HTTP-date) on 429",
            None,
            20,
            |o| o.count_accepted_with("now") >= 2 && o.requests.iter().any(|r| r.status == 429),
            now_gauge,
            || fail_first("now", 1, || Reply {
                headers: vec![("Retry-After".into(), http_date(SystemTime::now() + Duration::from_secs(4)))],
                ..Reply::status(429)
            }),
            |o| retry_after_honoured(o, 429)
        ),
        case!(
            "retry_after_on_5xx",
            May,
            "RW 2.0 §Retries: MAY honour Retry-After on 5xx",
            None,
            20,
            |o| o.count_accepted_with("now") >= 2 && o.requests.iter().any(|r| r.status == 503),
            now_gauge,
            || fail_first("now", 1, || Reply {
                headers: vec![("Retry-After".into(), "3".into())],
                ..Reply::status(503)
            }),
            |o| retry_after_honoured(o, 503)
        ),
        case!(
            "snappy_block_protobuf",
            Must,
            "RW §Protocol: snappy block format, valid protobuf",
            None,
            20,
            ok_when_up(2),
            gauge42,
            accept_all,
            |o| {
                if o.requests.is_empty() {
                    return Err("no request arrived".into());
                }
                match o.requests.iter().find_map(|r| r.decoded.as_ref().err()) {
                    Some(e) => Err(format!("a body did not decode: {e}")),
                    None => Ok(()),
                }
            }
        ),
        case!(
            "special_float_values",
            Must,
            "RW §Samples: NaN and ±Inf are carried",
            None,
            20,
            ok_when_up(2),
            || fixed(
                "# TYPE pos gauge\npos +Inf\n# TYPE neg gauge\nneg -Inf\n# TYPE nan gauge\nnan NaN\n# TYPE small gauge\nsmall 2.2250738585072014e-308\n"
            ),
            accept_all,
            |o| {
                all_equal(&o.samples("pos", &[]), f64::INFINITY, "pos")?;
                all_equal(&o.samples("neg", &[]), f64::NEG_INFINITY, "neg")?;
                let nan = o.samples("nan", &[]);
                at_least_one(&nan, "nan")?;
                if nan.iter().any(|x| !x.1.is_nan() || is_stale(x.1)) {
                    return Err("nan arrived as a number or as a stale marker".into());
                }
                all_equal(&o.samples("small", &[]), 2.2250738585072014e-308, "small")
            }
        ),
        case!(
            "up_zero_and_stale_on_failed_scrape",
            Must,
            "Prometheus staleness: a failed scrape stales its series",
            None,
            20,
            |o| o.samples("g", &[]).iter().any(|x| is_stale(x.1)),
            || Arc::new(|n| if n < 2 {
                Exposition::text("# TYPE g gauge\ng 1\n")
            } else {
                Exposition { status: 500, content_type: target::TEXT, body: "oops\n".into() }
            }),
            accept_all,
            |o| {
                let up = up_values(o);
                if !up.iter().any(|x| x.1 == 0.0) {
                    return Err("no up=0 after the target started answering 500".into());
                }
                if o.samples("g", &[]).iter().any(|x| is_stale(x.1)) {
                    Ok(())
                } else {
                    Err("g was not marked stale after the failed scrape".into())
                }
            }
        ),
        // Prometheus sends every 5 s (batch_send_deadline) and starts ~5 s late (discovery
        // batching): three refused requests and an accepted one take it ~25 s.
        case!(
            "no_retry_on_other_4xx",
            Must,
            "RW §Retries: MUST NOT retry 4xx other than 429 (401, 404, 413)",
            None,
            35,
            |o| o.requests.iter().any(|r| r.status == 413) && o.count_accepted_with("now") >= 2,
            now_gauge,
            || {
                let seen = AtomicUsize::new(0);
                Arc::new(move |_, d| {
                    if !has(d, "now") {
                        return Reply::ok();
                    }
                    match seen.fetch_add(1, Ordering::SeqCst) {
                        0 => Reply::status(401),
                        1 => Reply::status(404),
                        2 => Reply::status(413),
                        _ => Reply::ok(),
                    }
                })
            },
            |o| {
                for status in [401, 404, 413] {
                    let (at, ts) = first_refused(o, "now", status)?;
                    if let Some(r) = resent(o, at, "now", &ts).first() {
                        return Err(format!(
                            "the samples answered {status} were sent again {:?} later",
                            r.at - at
                        ));
                    }
                }
                Ok(())
            }
        ),
        case!(
            "batching_many_series",
            Must,
            "RW §Protocol: every series of a large scrape arrives",
            None,
            20,
            ok_when_up(2),
            || Arc::new(|_| {
                let mut b = String::from("# TYPE many gauge\n");
                for i in 0..2500 {
                    b.push_str(&format!("many{{i=\"{i}\",pod=\"pod-{}\"}} {i}\n", i % 50));
                }
                Exposition::text(b)
            }),
            accept_all,
            |o| {
                let mut seen = std::collections::HashSet::new();
                for (_, s) in o.accepted().filter(|(_, s)| s.name() == "many") {
                    let i = s.label("i").unwrap_or("");
                    let want = i.parse::<f64>().map_err(|_| format!("many with i={i:?}"))?;
                    if s.samples.iter().any(|x| x.1 != want) {
                        return Err(format!("many{{i={i}}} carries the wrong value"));
                    }
                    seen.insert(i.to_owned());
                }
                if seen.len() == 2500 {
                    Ok(())
                } else {
                    Err(format!("{} of the 2500 series arrived", seen.len()))
                }
            }
        ),
        // ---- RW 2.0 ----
        case!(
            "rw2_symbol_table",
            Must,
            "RW 2.0 §Symbols: symbols[0] is \"\", every ref resolves",
            v2,
            20,
            ok_when_up(2),
            gauge42,
            accept_all,
            |o| {
                for r in &o.requests {
                    let Ok(d) = &r.decoded else { continue };
                    if d.symbols.first().map(String::as_str) != Some("") {
                        return Err(format!("symbols[0] is {:?}, must be \"\"", d.symbols.first()));
                    }
                    if let Some(e) = d.ref_errors.first() {
                        return Err(format!("a reference does not resolve: {e}"));
                    }
                    let mut seen = std::collections::HashSet::new();
                    if let Some(dup) = d.symbols.iter().find(|s| !seen.insert(s.as_str())) {
                        return Err(format!("symbol {dup:?} repeated (SHOULD be deduplicated)"));
                    }
                }
                at_least_one(&o.samples("gauge", &[]), "gauge")
            }
        ),
        case!(
            "rw2_metadata",
            Should,
            "RW 2.0 §Metadata: type and help per series",
            v2,
            20,
            ok_when_up(2),
            gauge42,
            accept_all,
            |o| {
                let s = o
                    .accepted()
                    .map(|(_, s)| s)
                    .find(|s| s.name() == "gauge")
                    .ok_or("no gauge series arrived")?;
                match &s.metadata {
                    Some((2, help, _)) if help == "A gauge." => Ok(()),
                    other => Err(format!("metadata {other:?}, want type GAUGE (2) and help \"A gauge.\"")),
                }
            }
        ),
        case!(
            "rw2_fallback_to_rw1_on_415",
            May,
            "RW 2.0 §Responses: MAY retry 415 with another content type",
            v2,
            20,
            |o| o
                .requests
                .iter()
                .any(|r| r.accepted() && r.decoded.as_ref().is_ok_and(|d| d.proto == WriteProto::V1)),
            gauge42,
            || Arc::new(|_, d| match d {
                Ok(d) if d.proto == WriteProto::V2 => Reply::status(415),
                _ => Reply::ok(),
            }),
            |o| {
                let refused =
                    o.requests.iter().position(|r| r.status == 415).ok_or("no RW2 request arrived")?;
                if o.requests[refused..]
                    .iter()
                    .any(|r| r.accepted() && r.series().iter().any(|s| s.name() == "gauge"))
                {
                    Ok(())
                } else {
                    Err("after 415 the data never arrived as RW 1.0".into())
                }
            }
        ),
        case!(
            "rw2_2xx_without_written_headers_is_not_success",
            Should,
            "RW 2.0 §Responses: 2xx without *-Written headers SHOULD be treated as 415",
            v2,
            12,
            never,
            now_gauge,
            || Arc::new(|_, d| match d {
                Ok(d) if d.proto == WriteProto::V2 => Reply { written: false, ..Reply::ok() },
                _ => Reply::ok(),
            }),
            |o| {
                let first = o
                    .requests
                    .iter()
                    .find(|r| r.series().iter().any(|s| s.name() == "now"))
                    .ok_or("no request with now arrived")?;
                let ts: Vec<i64> = first
                    .series()
                    .iter()
                    .filter(|s| s.name() == "now")
                    .flat_map(|s| s.samples.iter().map(|x| x.0))
                    .collect();
                if resent(o, first.at, "now", &ts).is_empty() {
                    Err("the data answered 2xx without Written headers was taken as delivered (never sent again, nor as RW 1.0)".into())
                } else {
                    Ok(())
                }
            }
        ),
        case!(
            "histogram_large_counts_unmixed",
            Must,
            "RW 2.0 §TimeSeries: samples or histograms, never both; counts exact",
            None,
            20,
            ok_when_up(2),
            || fixed(
                "# HELP big A histogram.\n# TYPE big histogram\nbig_bucket{le=\"0.5\"} 400000000\nbig_bucket{le=\"+Inf\"} 1000000000\nbig_sum 250.5\nbig_count 1000000000\n"
            ),
            accept_all,
            |o| {
                all_equal(&o.samples("big_count", &[]), 1e9, "big_count")?;
                all_equal(&o.samples("big_sum", &[]), 250.5, "big_sum")?;
                all_equal(&o.samples("big_bucket", &[("le", "0.5")]), 4e8, "big_bucket{le=\"0.5\"}")?;
                match o.accepted().find(|(_, s)| !s.samples.is_empty() && s.histograms > 0) {
                    Some((_, s)) => Err(format!("{} carries both samples and histograms", s.name())),
                    None => Ok(()),
                }
            }
        ),
        case!(
            "rw2_exemplars",
            May,
            "RW 2.0 §Exemplars: exemplars travel with their series",
            v2,
            20,
            ok_when_up(2),
            || Arc::new(|n| Exposition {
                status: 200,
                content_type: target::OPENMETRICS,
                body: format!(
                    "# TYPE req counter\n# HELP req Requests.\nreq_total {n} # {{trace_id=\"abc{n}\"}} 1.0\n# EOF\n"
                ),
            }),
            accept_all,
            |o| {
                at_least_one(&o.samples("req_total", &[]), "req_total")?;
                if o.accepted().any(|(_, s)| s.name() == "req_total" && s.exemplars > 0) {
                    Ok(())
                } else {
                    Err("no exemplar arrived".into())
                }
            }
        ),
        // ---- Ferry extensions ----
        case!(
            "exactly_once_under_errors",
            Extension,
            "Ferry: no loss, no duplicates with intermittent 503s",
            None,
            12,
            never,
            counter,
            || Arc::new(|n, d| if has(d, "counter") && n % 3 == 1 {
                Reply::status(503)
            } else {
                Reply::ok()
            }),
            |o| {
                let v = o.samples("counter", &[]);
                if v.len() < 5 {
                    return Err(format!("only {} counter samples arrived", v.len()));
                }
                let mut seen = std::collections::HashSet::new();
                if let Some(t) = v.iter().find(|x| !seen.insert(x.0)) {
                    return Err(format!("counter at {} arrived twice", t.0));
                }
                let mut vals: Vec<f64> = v.iter().map(|x| x.1).collect();
                vals.sort_by(f64::total_cmp);
                match vals.windows(2).find(|w| w[1] != w[0] + 1.0) {
                    Some(w) => Err(format!("counter went from {} to {}: samples lost", w[0], w[1])),
                    None => Ok(()),
                }
            }
        ),
        case!(
            "atomic_scrape_requests",
            Extension,
            "Ferry: each scrape arrives in one request",
            None,
            20,
            ok_when_up(4),
            || Arc::new(|_| {
                let mut b = String::from("# TYPE test gauge\n");
                for i in 0..100 {
                    b.push_str(&format!("test{{i=\"{i}\"}} 1\n"));
                }
                Exposition::text(b)
            }),
            accept_all,
            |o| {
                let mut by_ts: BTreeMap<i64, std::collections::BTreeSet<usize>> = BTreeMap::new();
                for (i, r) in o.requests.iter().enumerate().filter(|(_, r)| r.accepted()) {
                    for s in r.series().iter().filter(|s| s.label("job") == Some("test")) {
                        for x in &s.samples {
                            by_ts.entry(x.0).or_default().insert(i);
                        }
                    }
                }
                if by_ts.len() < 2 {
                    return Err("fewer than two scrapes arrived".into());
                }
                match by_ts.iter().find(|(_, reqs)| reqs.len() > 1) {
                    Some((t, reqs)) => {
                        Err(format!("the scrape at {t} was split over {} requests", reqs.len()))
                    }
                    None => Ok(()),
                }
            }
        ),
        case!(
            "durable_across_outage",
            Extension,
            "Ferry: nothing lost while the receiver refuses connections",
            None,
            16,
            never,
            gauge42,
            || {
                let once = AtomicBool::new(false);
                Arc::new(move |_, d| {
                    if has(d, "up") && !once.swap(true, Ordering::SeqCst) {
                        Reply { refuse_for: Some(Duration::from_secs(6)), ..Reply::ok() }
                    } else {
                        Reply::ok()
                    }
                })
            },
            |o| {
                let gap = largest_up_gap(o)?;
                if gap > 2500 {
                    Err(format!("a {gap} ms hole in up after the outage: scrapes were lost"))
                } else {
                    Ok(())
                }
            }
        ),
    ];
    let mut crash = case!(
        "durable_across_sender_crash",
        Extension,
        "Ferry: nothing acknowledged lost across kill -9",
        None,
        18,
        never,
        gauge42,
        || {
            let start = Mutex::new(None::<Instant>);
            Arc::new(move |_, _| {
                let t0 = *start.lock().expect("lock").get_or_insert_with(Instant::now);
                // The receiver is down (503) around the crash, so the sender holds unsent data.
                let e = t0.elapsed();
                if e > Duration::from_secs(2) && e < Duration::from_secs(9) {
                    Reply::status(503)
                } else {
                    Reply::ok()
                }
            })
        },
        |o| {
            let gap = largest_up_gap(o)?;
            if gap > 3000 {
                Err(format!("a {gap} ms hole in up across the crash: data held by the sender was lost"))
            } else {
                Ok(())
            }
        }
    );
    crash.crash_at = Some(Duration::from_secs(6));
    let mut removed = case!(
        "staleness_removed_target",
        Must,
        "Prometheus staleness: a removed target's series are marked stale",
        None,
        30,
        |o| o.samples("up", &[("job", "test")]).iter().any(|x| is_stale(x.1)),
        gauge42,
        accept_all,
        |o| {
            let up = up_values(o);
            at_least_one(&up, "up")?;
            if !up.iter().any(|x| is_stale(x.1)) {
                return Err("the target left the file SD file but up got no stale marker".into());
            }
            if o.samples("gauge", &[]).iter().any(|x| is_stale(x.1)) {
                Ok(())
            } else {
                Err("gauge got no stale marker when its target was removed".into())
            }
        }
    );
    // Once three scrapes arrived (Prometheus applies discovery changes every 5 s).
    removed.remove_target_when = Some(|o| o.count_accepted_with("up") >= 3);
    // Right after the classic staleness case.
    let at =
        cases.iter().position(|c| c.id == "staleness_disappearing_series").map_or(cases.len(), |i| i + 1);
    cases.insert(at, removed);
    cases.push(crash);
    cases
}

/// An IMF-fixdate for `Retry-After`.
fn http_date(t: SystemTime) -> String {
    ferry_protocol::time::format_http_date(
        t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn case_ids_are_unique() {
        let mut ids: Vec<&str> = super::all().iter().map(|c| c.id).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
