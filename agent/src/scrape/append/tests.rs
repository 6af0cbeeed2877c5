//! The reference's scrape-loop and staleness golden cases (harness H: job `j`, target
//! `h:9100`), run through the pipeline without I/O.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use ferry_protocol::LabelSet;
use ferry_protocol::stale::{NORMAL_NAN_BITS, STALE_NAN_BITS};

use super::*;
use crate::config::Config;
use crate::scrape::parse::MetricType;

const TEXT: Option<&str> = Some("text/plain; version=0.0.4");

struct H {
    job: Job,
    st: TargetState,
    t: i64,
    /// Every definition the batches announced, as the WAL would know them.
    defined: std::collections::HashMap<u64, String>,
}

impl H {
    fn new(extra: &str) -> H {
        Self::with_labels(extra, &[])
    }

    fn with_labels(extra: &str, target_labels: &[(&str, &str)]) -> H {
        let yaml = format!("scrape_configs:\n  - job_name: j\n    scrape_interval: 15s\n{extra}");
        let job = Config::parse(&yaml, Path::new("t.yaml"), false, |_| None).unwrap().jobs.remove(0);
        let mut pairs = vec![("instance", "h:9100"), ("job", "j")];
        pairs.extend_from_slice(target_labels);
        let public = LabelSet::from_pairs(pairs).unwrap();
        H {
            job,
            st: TargetState::new(public, 7, Arc::new(AtomicU64::new(1))),
            t: 1_700_000_000_000,
            defined: Default::default(),
        }
    }

    /// Scrapes `body` at the next tick and returns (labels, value bits, timestamp) per sample.
    fn scrape(&mut self, body: &str) -> (ScrapeBatch, Vec<(String, u64, i64)>) {
        self.t += 15_000;
        let b = self.st.scrape(
            &self.job,
            Fetched::Body { body, content_type: TEXT, decoded_len: body.len() },
            self.t,
            self.t,
            0.01,
        );
        let rows = self.rows(&b);
        (b, rows)
    }

    fn fail(&mut self, error: &str) -> (ScrapeBatch, Vec<(String, u64, i64)>) {
        self.t += 15_000;
        let b = self.st.scrape(
            &self.job,
            Fetched::Failed { error: error.into(), body_size_limit_hit: false },
            self.t,
            self.t,
            0.01,
        );
        let rows = self.rows(&b);
        (b, rows)
    }

    /// Learns the batch's definitions, then names its samples by them: a sample whose
    /// series was never announced fails here.
    fn rows(&mut self, b: &ScrapeBatch) -> Vec<(String, u64, i64)> {
        for d in &b.new_series {
            self.defined.insert(d.id, d.labels.to_string());
        }
        b.samples
            .iter()
            .map(|s| {
                let name = self
                    .defined
                    .get(&s.series)
                    .unwrap_or_else(|| panic!("series {} never defined", s.series));
                (name.clone(), s.value.to_bits(), s.timestamp)
            })
            .collect()
    }
}

fn value_of(rows: &[(String, u64, i64)], name: &str) -> Option<f64> {
    let prefix = format!("{{__name__=\"{name}\"");
    rows.iter().find(|r| r.0.starts_with(&prefix)).map(|r| f64::from_bits(r.1))
}

fn user_rows(rows: &[(String, u64, i64)]) -> Vec<(String, u64, i64)> {
    rows.iter()
        .filter(|r| !REPORT_NAMES.iter().any(|n| r.0.starts_with(&format!("{{__name__=\"{n}\""))))
        .cloned()
        .collect()
}

/// (up, scraped, post, added)
fn synthetic(rows: &[(String, u64, i64)]) -> (f64, f64, f64, f64) {
    (
        value_of(rows, "up").unwrap(),
        value_of(rows, "scrape_samples_scraped").unwrap(),
        value_of(rows, "scrape_samples_post_metric_relabeling").unwrap(),
        value_of(rows, "scrape_series_added").unwrap(),
    )
}

#[test]
fn g_s01_honor_labels_false() {
    let mut h = H::new("");
    let (_, rows) = h.scrape("m{job=\"x\",instance=\"y\",a=\"1\"} 1\n");
    assert_eq!(
        user_rows(&rows)[0].0,
        r#"{__name__="m", a="1", exported_instance="y", exported_job="x", instance="h:9100", job="j"}"#
    );
}

#[test]
fn g_s02_exported_chaining() {
    let mut h = H::with_labels("", &[("foo", "3")]);
    let (_, rows) = h.scrape("metric{foo=\"1\",exported_foo=\"2\"} 0\n");
    assert_eq!(
        user_rows(&rows)[0].0,
        r#"{__name__="metric", exported_exported_foo="1", exported_foo="2", foo="3", instance="h:9100", job="j"}"#
    );
}

#[test]
fn honor_labels_true_and_empty_values() {
    let mut h = H::new("    honor_labels: true\n");
    let (_, rows) = h.scrape("m{job=\"x\"} 1\nn{job=\"\"} 2\n");
    let u = user_rows(&rows);
    assert_eq!(u[0].0, r#"{__name__="m", instance="h:9100", job="x"}"#);
    assert_eq!(u[1].0, r#"{__name__="n", instance="h:9100"}"#, "an empty scraped value removes the label");
    // G-S04
    let mut h = H::new("");
    let (_, rows) = h.scrape("m{a=\"\",b=\"2\"} 1\n");
    assert_eq!(user_rows(&rows)[0].0, r#"{__name__="m", b="2", instance="h:9100", job="j"}"#);
}

#[test]
fn g_s06_length_limits_count_name_and_target_labels() {
    let mut h = H::new("    label_name_length_limit: 7\n");
    let (b, rows) = h.scrape("m 1\n");
    assert_eq!(
        b.error.as_deref(),
        Some("label_name_length_limit exceeded (metric: m, label name: __name__, length: 8, limit: 7)")
    );
    assert_eq!(value_of(&rows, "up"), Some(0.0));
    let mut h = H::new("    label_value_length_limit: 5\n");
    let (b, _) = h.scrape("m 1\n");
    assert!(b.error.unwrap().starts_with("label_value_length_limit exceeded"));
}

#[test]
fn g_s07_sample_limit() {
    let mut h = H::new("    sample_limit: 2\n    extra_scrape_metrics: true\n");
    let (_, rows) = h.scrape("a 1\nb 1\n");
    assert_eq!(user_rows(&rows).len(), 2);
    let mut h = H::new("    sample_limit: 2\n    extra_scrape_metrics: true\n");
    let (b, rows) = h.scrape("a 1\nb 1\nc 1\n");
    assert_eq!(b.error.as_deref(), Some("sample limit exceeded"));
    assert!(user_rows(&rows).is_empty(), "nothing stored");
    assert_eq!(synthetic(&rows), (0.0, 3.0, 3.0, 2.0));
    assert_eq!(value_of(&rows, "scrape_sample_limit"), Some(2.0));
    assert_eq!(value_of(&rows, "scrape_body_size_bytes"), Some(12.0));
    let mut h = H::new(
        "    sample_limit: 2\n    metric_relabel_configs: [{source_labels: [__name__], regex: c, action: drop}]\n",
    );
    let (_, rows) = h.scrape("a 1\nb 1\nc 1\n");
    assert_eq!(synthetic(&rows), (1.0, 3.0, 2.0, 2.0));
}

#[test]
fn g_s09_failed_fetch_reports_zero() {
    let mut h = H::new("");
    let (b, rows) = h.fail("server returned HTTP status 500 Internal Server Error");
    assert_eq!(synthetic(&rows), (0.0, 0.0, 0.0, 0.0));
    assert!(b.error.unwrap().contains("500"));
}

#[test]
fn g_s12_duplicate_lines() {
    let mut h = H::new("");
    let (_, rows) = h.scrape("m 1\nm 2\nm 3\n");
    let u = user_rows(&rows);
    assert_eq!((u.len(), f64::from_bits(u[0].1)), (1, 1.0));
    assert_eq!(synthetic(&rows), (1.0, 3.0, 3.0, 1.0));
    let (_, rows) = h.scrape("m 1\nm 2\nm 3\n");
    assert_eq!(synthetic(&rows).3, 0.0);
    // Distinct explicit timestamps: all stored (a fresh target, so no stale marker for `m`).
    let mut h = H::new("");
    let (_, rows) = h.scrape("m 1 1001\nm 1 1002\n");
    assert_eq!(user_rows(&rows).iter().map(|r| r.2).collect::<Vec<_>>(), [1001, 1002]);
}

#[test]
fn g_s13_duplicate_label_names_fail_everything() {
    let mut h = H::new("");
    let (b, rows) = h.scrape("ok 1\nm{le=\"1\",le=\"2\"} 1\n");
    assert_eq!(b.error.as_deref(), Some("label name \"le\" is not unique: invalid sample"));
    assert!(user_rows(&rows).is_empty());
}

#[test]
fn g_s14_s15_relabeling_outcomes() {
    let mut h = H::new("    metric_relabel_configs: [{regex: __name__, action: labeldrop}]\n");
    assert_eq!(h.scrape("m 1\n").0.error.as_deref(), Some("missing metric name (__name__ label)"));
    let mut h = H::new("    metric_relabel_configs: [{source_labels: [__name__], regex: a, action: drop}]\n");
    let (_, rows) = h.scrape("a 1\nb 1\n");
    assert_eq!(user_rows(&rows).len(), 1);
    assert_eq!(synthetic(&rows), (1.0, 2.0, 1.0, 1.0));
    // The classic suite's NameLabel case: a series without a name fails the scrape.
    let mut h = H::new("");
    assert_eq!(
        h.scrape("{label=\"value\"} 1.0\n").0.error.as_deref(),
        Some("missing metric name (__name__ label)")
    );
}

#[test]
fn g_s17_report_series_ignore_honor_labels_and_relabeling() {
    let mut h = H::with_labels(
        "    honor_labels: true\n    metric_relabel_configs: [{source_labels: [__name__], regex: '.+', action: drop}]\n",
        &[("env", "prod")],
    );
    let (_, rows) = h.scrape("a 1\nb 1\n");
    assert!(user_rows(&rows).is_empty());
    assert_eq!(synthetic(&rows), (1.0, 2.0, 0.0, 0.0));
    assert!(rows.iter().any(|r| r.0 == r#"{__name__="up", env="prod", instance="h:9100", job="j"}"#));
    assert_eq!(rows.len(), 5, "up, duration, scraped, post, added");
}

#[test]
fn g_s19_honor_timestamps_and_future() {
    let mut h = H::new("");
    let (_, rows) = h.scrape("m 1 1000\n");
    assert_eq!(user_rows(&rows)[0].2, 1000);
    let mut h = H::new("    honor_timestamps: false\n");
    let (_, rows) = h.scrape("m 1 1000\n");
    assert_eq!(user_rows(&rows)[0].2, h.t);
    let mut h = H::new("");
    let future = h.t + 15_000 + 11 * 60_000;
    let (_, rows) = h.scrape(&format!("m 1 {future}\n"));
    assert!(user_rows(&rows).is_empty());
    assert_eq!(synthetic(&rows), (1.0, 1.0, 1.0, 0.0));
}

#[test]
fn g_st01_disappearance_and_st08_nan_is_not_stale() {
    let mut h = H::new("");
    h.scrape("a 1\nb 1\n");
    let (_, rows) = h.scrape("a 2\n");
    let u = user_rows(&rows);
    assert_eq!(u.len(), 2);
    assert!(u[0].0.contains("\"a\"") && f64::from_bits(u[0].1) == 2.0);
    assert!(u[1].0.contains("\"b\"") && u[1].1 == STALE_NAN_BITS && u[1].2 == h.t);
    let (_, rows) = h.scrape("a NaN\n");
    assert_eq!(user_rows(&rows)[0].1, NORMAL_NAN_BITS);
}

#[test]
fn g_st02_failure_sequence() {
    let mut h = H::new("");
    h.scrape("a 1\n");
    let (_, rows) = h.fail("HTTP 500");
    let u = user_rows(&rows);
    assert_eq!((u.len(), u[0].1), (1, STALE_NAN_BITS));
    assert_eq!(value_of(&rows, "up"), Some(0.0));
    let (_, rows) = h.fail("HTTP 500");
    assert!(user_rows(&rows).is_empty(), "no second marker");
    let (_, rows) = h.scrape("a 4\n");
    let u = user_rows(&rows);
    assert_eq!((u.len(), f64::from_bits(u[0].1)), (1, 4.0));
}

#[test]
fn g_st03_st04_explicit_timestamps() {
    let mut h = H::new("");
    h.scrape("a 1 1000\n");
    assert!(user_rows(&h.scrape("").1).is_empty(), "explicit timestamps are not tracked");
    let mut h = H::new("    track_timestamps_staleness: true\n");
    h.scrape("a 1 1000\n");
    let (_, rows) = h.scrape("");
    assert_eq!(user_rows(&rows)[0].1, STALE_NAN_BITS);
    assert_eq!(user_rows(&rows)[0].2, h.t);
    let mut h = H::new("    honor_timestamps: false\n");
    h.scrape("a 1 1000\n");
    assert_eq!(user_rows(&h.scrape("").1)[0].1, STALE_NAN_BITS);
}

#[test]
fn st06_parse_error_keeps_earlier_series_unstaled() {
    let mut h = H::new("");
    h.scrape("a 1\nb 1\nc 1\n");
    let (b, rows) = h.scrape("a 1\nb x\n");
    assert!(b.error.is_some());
    // a was tracked before the failure: no marker; b and c were not: markers.
    let stale: Vec<String> = user_rows(&rows)
        .into_iter()
        .filter(|r| r.1 == STALE_NAN_BITS)
        .map(|r| r.0[11..12].to_owned())
        .collect();
    assert_eq!(stale, ["b", "c"]);
}

#[test]
fn empty_body_is_success_and_unsupported_content_type_fails() {
    let mut h = H::new("");
    h.scrape("a 1\n");
    let (b, rows) = h.scrape("");
    assert!(b.error.is_none());
    assert_eq!(value_of(&rows, "up"), Some(1.0));
    assert_eq!(user_rows(&rows)[0].1, STALE_NAN_BITS);
    // G-P14
    h.t += 15_000;
    let b = h.st.scrape(
        &h.job,
        Fetched::Body { body: "a 1\n", content_type: Some("application/json"), decoded_len: 4 },
        h.t,
        h.t,
        0.0,
    );
    assert!(b.error.unwrap().contains("unsupported Content-Type \"application/json\""));
}

#[test]
fn end_of_run_markers_cover_report_series() {
    let mut h = H::new("");
    h.scrape("a 1\n");
    let b = h.st.end_of_run(&h.job, h.t + 15_000);
    let rows = h.rows(&b);
    assert_eq!(rows.len(), 6, "a plus the five report series");
    assert!(rows.iter().all(|r| r.1 == STALE_NAN_BITS));
    // Every series the loop defined goes with it, the report series' eight included.
    let mut gone = b.gone.clone();
    gone.sort_unstable();
    let mut defined: Vec<u64> =
        h.st.report.iter().map(|d| d.id).chain(h.st.cache.values().filter_map(|e| e.series())).collect();
    defined.sort_unstable();
    assert_eq!(gone.len(), 9);
    assert_eq!(gone, defined);
}

#[test]
fn series_definitions_are_announced_once() {
    let mut h = H::new("");
    let (b1, _) = h.scrape("a 1\nb 1\n");
    assert_eq!(b1.new_series.len(), 2 + 8);
    let (b2, _) = h.scrape("a 1\nb 1\n");
    assert!(b2.new_series.is_empty());
    let (b3, _) = h.scrape("a 1\nb 1\nc 1\n");
    assert_eq!(b3.new_series.len(), 1);
    assert_eq!(h.st.cached_series(), 3);
}

#[test]
fn metadata_travels_when_it_changes() {
    let mut h = H::new("");
    let (b, _) = h.scrape("# HELP a Things.\n# TYPE a counter\na 1\n");
    assert_eq!(b.metadata.len(), 1);
    assert_eq!((b.metadata[0].kind, b.metadata[0].help.as_str()), (MetricType::Counter, "Things."));
    assert!(h.scrape("# HELP a Things.\n# TYPE a counter\na 2\n").0.metadata.is_empty());
    assert_eq!(h.scrape("# HELP a Other.\n# TYPE a counter\na 3\n").0.metadata.len(), 1);
}

#[test]
fn a_cache_entry_is_8_bytes() {
    // Per-series memory is a goal (issues #4 and #9); the cache is a good part of it. With
    // the 16-byte key a slot is 24 bytes; a new field here costs every cached series 8.
    assert_eq!(std::mem::size_of::<super::CacheEntry>(), 8);
    assert_eq!(std::mem::size_of::<([u64; 2], super::CacheEntry)>(), 24);
}

#[test]
fn a_series_not_taken_at_first_is_defined_when_it_is() {
    let mut h = H::new(
        "    sample_limit: 1
",
    );
    // `b`'s first sample is in the future and `c` is over the limit: neither is taken, so
    // neither is defined yet (the scrape fails on the limit).
    let future = h.t + 15_000 + 11 * 60_000;
    let (b, _) = h.scrape(&format!(
        "a 1
b 1 {future}
c 1
"
    ));
    assert_eq!(b.error.as_deref(), Some("sample limit exceeded"));
    let defined: Vec<String> = b.new_series.iter().map(|d| d.labels.to_string()).collect();
    assert!(defined.iter().all(|d| !d.contains("\"b\"") && !d.contains("\"c\"")), "{defined:?}");
    // Taken later, each is defined then, with the labels the first sighting built.
    h.job.sample_limit = 0;
    let (b, rows) = h.scrape(
        "b 2
c 3
",
    );
    assert_eq!(b.new_series.len(), 2);
    assert_eq!(value_of(&rows, "b"), Some(2.0));
    assert_eq!(value_of(&rows, "c"), Some(3.0));
    assert!(h.st.pending.is_empty());
}

#[test]
fn the_cache_forgets_series_unseen_for_twenty_scrapes_and_redefines_them() {
    let mut h = H::new("");
    let (b, _) = h.scrape("a 1\nb 1\n");
    let b_id = b.new_series.iter().find(|d| d.labels.to_string().contains("\"b\"")).unwrap().id;
    // b is gone: it stays cached for EVICT_AFTER scrapes, and the sweep every 16 scrapes
    // drops it within 16 more.
    let mut gone_after = None;
    for n in 1..=40 {
        let (batch, _) = h.scrape("a 1\n");
        if gone_after.is_none() && h.st.cache.len() == 1 {
            gone_after = Some(n);
            // The batch of the scrape that forgot it tells the WAL so.
            assert_eq!(batch.gone, [b_id]);
        } else {
            assert!(batch.gone.is_empty(), "scrape {n} said {:?} went", batch.gone);
        }
    }
    let n = gone_after.expect("b was never forgotten");
    assert!((EVICT_AFTER as usize..EVICT_AFTER as usize + 16).contains(&n), "forgotten after {n} scrapes");
    // Back again, b is a new series with a new definition.
    let (b, rows) = h.scrape("a 1\nb 2\n");
    let def = b.new_series.iter().find(|d| d.labels.to_string().contains("\"b\"")).expect("b redefined");
    assert_ne!(def.id, b_id);
    assert_eq!(value_of(&user_rows(&rows), "b"), Some(2.0));
}

#[test]
fn markers_stay_right_over_hundreds_of_scrapes() {
    // Flags, not generation numbers, so nothing may wrap: a series listed every scrape but
    // never tracked (an explicit timestamp) never gets a marker, a tracked one gets exactly
    // one when it goes, and a duplicate line is still caught after many scrapes.
    let mut h = H::new("");
    for _ in 0..600 {
        let body = format!("a 1 {}\nb 1\nb 2\n", h.t + 15_000);
        let (_, rows) = h.scrape(&body);
        let u = user_rows(&rows);
        assert_eq!(u.len(), 2, "{u:?}");
        assert!(u.iter().all(|r| r.1 != STALE_NAN_BITS), "{u:?}");
        assert_eq!(value_of(&u, "b"), Some(1.0), "the first of two lines wins");
    }
    let (_, rows) = h.scrape("c 1\n");
    let stale: Vec<_> = user_rows(&rows).into_iter().filter(|r| r.1 == STALE_NAN_BITS).collect();
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert!(stale[0].0.contains("\"b\""));
    for _ in 0..300 {
        let (_, rows) = h.scrape("c 1\n");
        assert!(user_rows(&rows).iter().all(|r| r.1 != STALE_NAN_BITS));
    }
}

#[test]
fn new_series_are_built_on_their_neighbours_and_their_groups() {
    // Two containers' series in three families, then a histogram: a container's memory and
    // network series are based on its CPU series (apart in the exposition), each bucket but
    // the first on the first, the sum on it too (no `le`, another name).
    let mut h = H::new("");
    let (a, b) = (
        r#"container="a",id="/x/1",image="i:1",pod="p1""#,
        r#"container="b",id="/x/2",image="i:2",pod="p2""#,
    );
    let mut body = String::new();
    for (family, v) in [("cpu_total", 1), ("mem_bytes", 2), ("net_total", 3)] {
        for c in [a, b] {
            body.push_str(&format!("{family}{{{c}}} {v}\n"));
        }
    }
    body.push_str(
        "lat_bucket{pod=\"p\",route=\"/\",le=\"0.1\"} 1\nlat_bucket{pod=\"p\",route=\"/\",le=\"1\"} 2\n",
    );
    body.push_str("lat_bucket{pod=\"p\",route=\"/\",le=\"+Inf\"} 3\nlat_sum{pod=\"p\",route=\"/\"} 0.5\n");
    let body = body.as_str();
    let (batch, _) = h.scrape(body);
    // Whether the series `name` with label `key` is based, having checked it reads right.
    let based = |name: &str, key: (&str, &str), len: usize| {
        let l = batch
            .new_series
            .iter()
            .map(|d| &d.labels)
            .find(|l| l.metric_name() == Some(name) && l.get(key.0).is_some_and(|v| v == key.1))
            .unwrap_or_else(|| panic!("{name} with {key:?} defined"));
        let text = |name| l.get(name).map(|v| v.to_string());
        assert_eq!(
            (l.len(), text("instance").as_deref(), text("job").as_deref()),
            (len, Some("h:9100"), Some("j")),
            "{l}"
        );
        assert_eq!(*l, SeriesLabels::from_set(&l.to_label_set()));
        l.is_based()
    };
    for c in ["a", "b"] {
        assert!(!based("cpu_total", ("container", c), 7), "the first of its group is whole");
        assert!(based("mem_bytes", ("container", c), 7), "{c}");
        assert!(based("net_total", ("container", c), 7), "{c}");
    }
    assert!(!based("lat_bucket", ("le", "0.1"), 6));
    assert!(based("lat_bucket", ("le", "1"), 6));
    assert!(based("lat_bucket", ("le", "+Inf"), 6));
    assert!(based("lat_sum", ("pod", "p"), 5));
}
