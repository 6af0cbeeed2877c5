//! Self-metrics, served at `/metrics` in the Prometheus text format (`ferry_receiver_*`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Metrics {
    /// (proto, status code) → requests.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub samples_written: AtomicU64,
    pub histograms_written: AtomicU64,
    pub exemplars_written: AtomicU64,
    pub series_rejected: AtomicU64,
    pub rate_limited: AtomicU64,
    pub bytes_received: AtomicU64,
    pub storage_errors: AtomicU64,
    pub write_seconds_micros: AtomicU64,
    pub sync_seconds_micros: AtomicU64,
    pub checkpointed_log_records: AtomicU64,
    pub retention_deleted: AtomicU64,
}

impl Metrics {
    pub fn request(&self, proto: &'static str, status: u16) {
        *self.requests.lock().expect("metrics lock").entry((proto, status)).or_default() += 1;
    }

    /// The exposition; `series` and `disk_bytes` are read from the store at scrape time.
    pub fn render(&self, series: usize, disk_bytes: u64) -> String {
        let mut out = String::with_capacity(2048);
        out.push_str(
            "# HELP ferry_receiver_write_requests_total Write requests by protocol and HTTP status.\n",
        );
        out.push_str("# TYPE ferry_receiver_write_requests_total counter\n");
        for ((proto, code), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ =
                writeln!(out, "ferry_receiver_write_requests_total{{proto=\"{proto}\",code=\"{code}\"}} {n}");
        }
        let counters: [(&str, &str, &AtomicU64); 8] = [
            ("samples_written_total", "Float samples committed.", &self.samples_written),
            ("histograms_written_total", "Histogram samples committed.", &self.histograms_written),
            ("exemplars_written_total", "Exemplars committed.", &self.exemplars_written),
            (
                "series_rejected_total",
                "Rejected series or samples, one per error line of a 400.",
                &self.series_rejected,
            ),
            (
                "rate_limited_requests_total",
                "Requests answered 429 by a tenant's ingestion rate limit.",
                &self.rate_limited,
            ),
            ("received_bytes_total", "Compressed request bytes received.", &self.bytes_received),
            ("storage_errors_total", "Writes answered 500 because storage failed.", &self.storage_errors),
            (
                "checkpointed_log_records_total",
                "Write-log records retired by checkpoints (their samples are now in chunks).",
                &self.checkpointed_log_records,
            ),
        ];
        for (name, help, v) in counters {
            let _ =
                writeln!(out, "# HELP ferry_receiver_{name} {help}\n# TYPE ferry_receiver_{name} counter");
            let _ = writeln!(out, "ferry_receiver_{name} {}", v.load(Relaxed));
        }
        for (name, help, v) in [
            (
                "write_seconds_total",
                "Time spent validating and committing writes.",
                &self.write_seconds_micros,
            ),
            ("sync_seconds_total", "Time spent waiting for writes to reach disk.", &self.sync_seconds_micros),
        ] {
            let _ =
                writeln!(out, "# HELP ferry_receiver_{name} {help}\n# TYPE ferry_receiver_{name} counter");
            let _ = writeln!(out, "ferry_receiver_{name} {}", v.load(Relaxed) as f64 / 1e6);
        }
        let _ = writeln!(
            out,
            "# HELP ferry_receiver_retention_deleted_total Keys deleted by retention.\n# TYPE ferry_receiver_retention_deleted_total counter\nferry_receiver_retention_deleted_total {}",
            self.retention_deleted.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ferry_receiver_series Series in the store, all tenants.\n# TYPE ferry_receiver_series gauge\nferry_receiver_series {series}"
        );
        let _ = writeln!(
            out,
            "# HELP ferry_receiver_storage_bytes Bytes the store occupies on disk.\n# TYPE ferry_receiver_storage_bytes gauge\nferry_receiver_storage_bytes {disk_bytes}"
        );
        out
    }
}
