//! Self-metrics (`ferry_*`), the targets API in Prometheus' JSON shape, health, readiness
//! and reload endpoints.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use ferry_protocol::LabelSet;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::scrape::manager::Manager;

#[derive(Debug, Default)]
pub struct Metrics {
    pub scrapes: AtomicU64,
    pub scrape_failures: AtomicU64,
    pub samples_scraped: AtomicU64,
    pub stale_markers: AtomicU64,
    pub batches: AtomicU64,
    pub series_defined: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct Shared {
    pub manager: Arc<Mutex<Manager>>,
    pub metrics: Metrics,
    pub wal: Option<Arc<crate::wal::Wal>>,
    pub endpoints: std::sync::Mutex<Vec<(String, Arc<crate::remote::queue::EndpointMetrics>)>>,
    /// Ask the main task to reload; it answers with the outcome.
    pub reload: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/targets", get(targets))
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .route("/-/ready", get(|| async { "Ready.\n" }))
        .route("/-/reload", post(reload).put(reload))
        .with_state(shared)
}

async fn reload(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let (tx, rx) = oneshot::channel();
    if s.reload.send(tx).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_owned());
    }
    match rx.await {
        Ok(Ok(())) => (StatusCode::OK, "reloaded\n".to_owned()),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to reload config: {e}\n")),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_owned()),
    }
}

fn labels_json(ls: &LabelSet) -> Value {
    Value::Object(ls.iter().map(|l| (l.name.clone(), Value::String(l.value.clone()))).collect())
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = ferry_protocol::time::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60,
        ms.rem_euclid(1000)
    )
}

#[derive(Debug, serde::Deserialize)]
struct TargetsQuery {
    /// Prometheus' filter: `active`, `dropped` or `any` (default).
    state: Option<String>,
}

async fn targets(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<TargetsQuery>,
) -> impl IntoResponse {
    let state = q.state.as_deref().unwrap_or("any").to_ascii_lowercase();
    let (want_active, want_dropped) = match state.as_str() {
        "active" => (true, false),
        "dropped" => (false, true),
        _ => (true, true),
    };
    let view = s.manager.lock().await.view(want_dropped);
    let (active, dropped) = (view.active, view.dropped);
    let active: Vec<Value> = active
        .iter()
        .filter(|_| want_active)
        .map(|v| {
            json!({
                "discoveredLabels": labels_json(&v.target.discovered),
                "labels": labels_json(&v.target.public),
                "scrapePool": v.job,
                "scrapeUrl": v.target.url,
                "globalUrl": v.target.url,
                "lastError": v.status.last_error,
                "lastScrape": if v.status.last_scrape == 0 { "0001-01-01T00:00:00Z".to_owned() } else { rfc3339(v.status.last_scrape) },
                "lastScrapeDuration": v.status.last_duration,
                "health": v.status.health,
                "scrapeInterval": crate::duration::format(v.interval),
                "scrapeTimeout": crate::duration::format(v.timeout),
            })
        })
        .collect();
    let counts: serde_json::Map<String, Value> =
        view.dropped_counts.into_iter().map(|(job, n)| (job, json!(n))).collect();
    let dropped: Vec<Value> = dropped
        .iter()
        .map(|(job, d)| json!({"discoveredLabels": labels_json(d), "scrapePool": job}))
        .collect();
    // Not in Prometheus' shape: the state of discovery that can fail on its own, so that a
    // failing Kubernetes watch is visible next to the targets it would have produced.
    let watches: Vec<Value> = crate::discovery::kubernetes::watches::status()
        .into_iter()
        .map(|w| {
            json!({"resource": w.key.resource, "namespace": w.key.namespace, "labelSelector": w.key.labels,
                   "fieldSelector": w.key.fields, "synced": w.synced, "objects": w.objects,
                   "errors": w.errors, "lastError": w.last_error})
        })
        .collect();
    let failed: Vec<Value> = crate::discovery::kubernetes::failed_providers()
        .into_iter()
        .map(|(job, provider, error)| json!({"scrapePool": job, "provider": provider, "error": error}))
        .collect();
    axum::Json(json!({"status": "success", "data": {
        "activeTargets": active, "droppedTargets": dropped, "droppedTargetCounts": counts,
        "kubernetesWatches": watches, "discoveryFailures": failed}}))
}

/// Kubernetes discovery: one series per shared watch, and providers that could not start.
fn render_kubernetes(out: &mut String) {
    let watches = crate::discovery::kubernetes::watches::status();
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let mut lines: [(&str, &str, &str, String); 3] = [
        (
            "ferry_kubernetes_watch_objects",
            "gauge",
            "Objects cached by a shared Kubernetes watch.",
            String::new(),
        ),
        (
            "ferry_kubernetes_watch_synced",
            "gauge",
            "1 once the watch has listed; 0 while it has not.",
            String::new(),
        ),
        (
            "ferry_kubernetes_watch_errors_total",
            "counter",
            "Failed list or watch calls (each is retried with backoff).",
            String::new(),
        ),
    ];
    for w in &watches {
        let l = format!(
            "resource=\"{}\",namespace=\"{}\",label_selector=\"{}\",field_selector=\"{}\"",
            w.key.resource,
            esc(w.key.namespace.as_deref().unwrap_or("")),
            esc(w.key.labels.as_deref().unwrap_or("")),
            esc(w.key.fields.as_deref().unwrap_or(""))
        );
        let vals = [w.objects as u64, u64::from(w.synced), w.errors];
        for (line, v) in lines.iter_mut().zip(vals) {
            let _ = writeln!(line.3, "{}{{{l}}} {v}", line.0);
        }
    }
    for (name, kind, help, body) in &lines {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{body}");
    }
    let _ = writeln!(
        out,
        "# HELP ferry_kubernetes_sd_failed Kubernetes discovery providers that could not start (see the log).\n# TYPE ferry_kubernetes_sd_failed gauge"
    );
    for (job, provider, _) in crate::discovery::kubernetes::failed_providers() {
        let _ =
            writeln!(out, "ferry_kubernetes_sd_failed{{job=\"{}\",provider=\"{provider}\"}} 1", esc(&job));
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let view = s.manager.lock().await.view(false);
    let (active, errors) = (view.active, view.target_limit_errors);
    let mut out = String::with_capacity(4096);
    let m = &s.metrics;
    for (name, help, v) in [
        ("ferry_scrapes_total", "Scrapes attempted.", &m.scrapes),
        ("ferry_scrape_failures_total", "Scrapes that failed (up=0).", &m.scrape_failures),
        (
            "ferry_samples_scraped_total",
            "Samples produced by scrapes, report series and stale markers included.",
            &m.samples_scraped,
        ),
        ("ferry_stale_markers_total", "Stale markers written.", &m.stale_markers),
        (
            "ferry_scrape_batches_total",
            "Scrape batches handed on (one per scrape, plus end-of-run batches).",
            &m.batches,
        ),
        ("ferry_series_defined_total", "Series definitions announced.", &m.series_defined),
        ("ferry_config_reloads_total", "Successful configuration reloads.", &m.reloads),
        (
            "ferry_config_reload_failures_total",
            "Failed configuration reloads (the old config stays).",
            &m.reload_failures,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
    }
    let _ = writeln!(
        out,
        "# HELP ferry_targets Active scrape targets by job and health.\n# TYPE ferry_targets gauge"
    );
    let mut by: std::collections::BTreeMap<(String, &str), usize> = Default::default();
    let mut cached = 0usize;
    for v in &active {
        *by.entry((v.job.clone(), v.status.health)).or_default() += 1;
        cached += v.status.cached_series;
    }
    for ((job, health), n) in by {
        let _ = writeln!(out, "ferry_targets{{job=\"{job}\",health=\"{health}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP ferry_series_cache_entries Series cache entries across targets.\n# TYPE ferry_series_cache_entries gauge\nferry_series_cache_entries {cached}"
    );
    let _ = writeln!(
        out,
        "# HELP ferry_target_limit_exceeded Jobs over their target_limit (1 each).\n# TYPE ferry_target_limit_exceeded gauge"
    );
    for (job, _) in errors {
        let _ = writeln!(out, "ferry_target_limit_exceeded{{job=\"{job}\"}} 1");
    }
    render_storage(&s, &mut out);
    render_kubernetes(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out)
}

/// (name, type, help, getter) of one per-endpoint series.
type MetricLine =
    (&'static str, &'static str, &'static str, fn(&crate::remote::queue::EndpointMetrics) -> f64);

/// WAL and per-endpoint remote-write metrics.
fn render_storage(s: &Shared, out: &mut String) {
    if let Some(wal) = &s.wal {
        let w = &wal.metrics;
        for (name, help, v) in [
            ("ferry_wal_records_written_total", "WAL records (scrape batches) written.", &w.records_written),
            ("ferry_wal_bytes_written_total", "WAL bytes written.", &w.bytes_written),
            ("ferry_wal_samples_written_total", "Samples written to the WAL.", &w.samples_written),
            ("ferry_wal_fsyncs_total", "WAL fsyncs (group commits).", &w.fsyncs),
            (
                "ferry_wal_write_failures_total",
                "WAL writes that failed (disk full, I/O error); the batch was dropped.",
                &w.write_failures,
            ),
            ("ferry_wal_segments_deleted_total", "WAL segments deleted.", &w.segments_deleted),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP ferry_wal_size_bytes Bytes of WAL segments on disk.\n# TYPE ferry_wal_size_bytes gauge\nferry_wal_size_bytes {}",
            w.size_bytes.load(Relaxed)
        );
    }
    let endpoints = s.endpoints.lock().expect("endpoints lock").clone();
    if endpoints.is_empty() {
        return;
    }
    let wal_dropped = s.wal.as_ref().map(|w| w.dropped()).unwrap_or_default();
    let now = crate::scrape::scrape_loop::now_ms();
    let _ = writeln!(
        out,
        "# HELP ferry_remote_dropped_samples_total Samples an endpoint will never send, by reason.\n# TYPE ferry_remote_dropped_samples_total counter"
    );
    for (ep, m) in &endpoints {
        let wal_full = wal_dropped.get(ep).copied().unwrap_or(0);
        for (reason, v) in [
            ("wal_full", wal_full),
            ("http_4xx", m.dropped_http.load(Relaxed)),
            ("sample_age_limit", m.dropped_age.load(Relaxed)),
            ("unresolved_series", m.dropped_unresolved.load(Relaxed)),
            ("protocol_mismatch", m.dropped_protocol.load(Relaxed)),
        ] {
            let _ = writeln!(
                out,
                "ferry_remote_dropped_samples_total{{endpoint=\"{ep}\",reason=\"{reason}\"}} {v}"
            );
        }
    }
    let series: [MetricLine; 10] = [
        ("ferry_remote_samples_sent_total", "counter", "Samples sent and accepted.", |m| {
            m.samples_sent.load(Relaxed) as f64
        }),
        ("ferry_remote_bytes_sent_total", "counter", "Compressed request bytes sent and accepted.", |m| {
            m.bytes_sent.load(Relaxed) as f64
        }),
        ("ferry_remote_requests_sent_total", "counter", "Requests accepted.", |m| {
            m.requests_sent.load(Relaxed) as f64
        }),
        ("ferry_remote_retries_total", "counter", "Requests retried (5xx, 429, network errors).", |m| {
            m.retries.load(Relaxed) as f64
        }),
        (
            "ferry_remote_relabel_dropped_samples_total",
            "counter",
            "Samples dropped by write_relabel_configs.",
            |m| m.dropped_relabel.load(Relaxed) as f64,
        ),
        ("ferry_remote_lanes", "gauge", "Parallel request lanes.", |m| m.lanes.load(Relaxed) as f64),
        (
            "ferry_remote_held_samples",
            "gauge",
            "Samples read from the WAL and held for more scrapes of their target (batch_send_deadline).",
            |m| m.held_samples.load(Relaxed) as f64,
        ),
        ("ferry_remote_rw1_fallback", "gauge", "1 when the endpoint fell back from RW2 to RW1.", |m| {
            f64::from(u8::from(m.using_rw1_fallback.load(Relaxed)))
        }),
        ("ferry_remote_cursor_segment", "gauge", "WAL segment of the endpoint's cursor.", |m| {
            m.cursor_segment.load(Relaxed) as f64
        }),
        (
            "ferry_remote_last_sent_timestamp_seconds",
            "gauge",
            "Scrape time of the newest fully sent scrape.",
            |m| m.last_sent_ts.load(Relaxed) as f64 / 1000.0,
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (ep, m) in &endpoints {
            let _ = writeln!(out, "{name}{{endpoint=\"{ep}\"}} {}", get(m));
        }
    }
    let _ = writeln!(
        out,
        "# HELP ferry_remote_lag_seconds How far behind the newest sent scrape is.\n# TYPE ferry_remote_lag_seconds gauge"
    );
    for (ep, m) in &endpoints {
        let last = m.last_sent_ts.load(Relaxed);
        let lag = if last > 0 { (now - last) as f64 / 1000.0 } else { 0.0 };
        let _ = writeln!(out, "ferry_remote_lag_seconds{{endpoint=\"{ep}\"}} {lag}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
