//! A counting remote-write receiver: takes RW1 and RW2 (snappy block), decodes every request
//! with `ferry_protocol`'s messages and counts what arrived (wire and decoded bytes, samples,
//! the agent's report series and stale markers apart from data samples). During an outage it
//! answers 503 without reading the body; afterwards it records when the last sample stamped
//! inside the outage arrived, which is the catch-up time.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_protocol::headers::{self, WriteProto};
use ferry_protocol::{is_stale, rw1, rw2, snappy};
use prost::Message;

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub requests: u64,
    pub rejected: u64,
    pub bad: u64,
    pub wire_bytes: u64,
    pub raw_bytes: u64,
    /// RW2: what the symbol tables alone take once compressed, each on its own. Every request
    /// must carry the strings its series use, so this is a floor under the wire bytes.
    pub symbol_wire_bytes: u64,
    /// Every sample, report series and stale markers included.
    pub samples: u64,
    /// Samples of the targets' own series, stale markers excluded: what delivery checks.
    pub data_samples: u64,
    pub stale_markers: u64,
    /// Largest (arrival - sample timestamp), ms.
    pub max_lag_ms: i64,
    /// Arrival (ms) of the last data sample stamped inside the outage.
    pub outage_last_arrival_ms: i64,
    pub outage_samples: u64,
}

#[derive(Debug, Default)]
pub struct Sink {
    pub counts: Mutex<Counts>,
    /// `[from, to)` in ms: answer 503 in that span.
    pub outage: Mutex<Option<(i64, i64)>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn is_report(name: &str) -> bool {
    name == "up" || name.starts_with("scrape_")
}

/// Counts one series' samples.
fn count(
    c: &mut Counts,
    name: &str,
    samples: impl Iterator<Item = (i64, f64)>,
    arrival: i64,
    outage: Option<(i64, i64)>,
) {
    for (ts, v) in samples {
        c.samples += 1;
        c.max_lag_ms = c.max_lag_ms.max(arrival - ts);
        if is_stale(v) {
            c.stale_markers += 1;
        } else if !is_report(name) {
            c.data_samples += 1;
            if let Some((from, to)) = outage
                && ts >= from
                && ts < to
            {
                c.outage_samples += 1;
                c.outage_last_arrival_ms = c.outage_last_arrival_ms.max(arrival);
            }
        }
    }
}

pub async fn write(State(sink): State<Arc<Sink>>, headers: HeaderMap, body: Bytes) -> Response {
    let arrival = now_ms();
    let outage = *sink.outage.lock().expect("outage lock");
    if let Some((from, to)) = outage
        && arrival >= from
        && arrival < to
    {
        sink.counts.lock().expect("counts lock").rejected += 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "bench outage").into_response();
    }
    let ct = headers.get(headers::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let proto = headers::parse_content_type(ct).unwrap_or(WriteProto::V1);
    let raw = match snappy::decode_block(&body, snappy::DEFAULT_MAX_DECODED_SIZE) {
        Ok(r) => r,
        Err(e) => {
            sink.counts.lock().expect("counts lock").bad += 1;
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
    };
    let mut local = Counts {
        requests: 1,
        wire_bytes: body.len() as u64,
        raw_bytes: raw.len() as u64,
        ..Default::default()
    };
    let mut written = 0u64;
    match proto {
        WriteProto::V1 => {
            let Ok(req) = rw1::WriteRequest::decode(raw.as_slice()) else {
                sink.counts.lock().expect("counts lock").bad += 1;
                return (StatusCode::BAD_REQUEST, "bad RW1 protobuf").into_response();
            };
            for ts in &req.timeseries {
                let name = ts.labels.iter().find(|l| l.name == "__name__").map_or("", |l| l.value.as_str());
                count(&mut local, name, ts.samples.iter().map(|s| (s.timestamp, s.value)), arrival, outage);
            }
        }
        WriteProto::V2 => {
            let Ok(req) = rw2::Request::decode(raw.as_slice()) else {
                sink.counts.lock().expect("counts lock").bad += 1;
                return (StatusCode::BAD_REQUEST, "bad RW2 protobuf").into_response();
            };
            for ts in &req.timeseries {
                let mut name = "";
                for pair in ts.labels_refs.chunks(2) {
                    if let [n, v] = pair
                        && req.symbols.get(*n as usize).is_some_and(|s| s == "__name__")
                    {
                        name = req.symbols.get(*v as usize).map_or("", |s| s.as_str());
                    }
                }
                count(&mut local, name, ts.samples.iter().map(|s| (s.timestamp, s.value)), arrival, outage);
                written += ts.samples.len() as u64;
            }
            let symbols = rw2::Request { symbols: req.symbols, timeseries: Vec::new() }.encode_to_vec();
            local.symbol_wire_bytes = snappy::encode_block(&symbols).len() as u64;
        }
    }
    {
        let mut c = sink.counts.lock().expect("counts lock");
        c.requests += local.requests;
        c.wire_bytes += local.wire_bytes;
        c.raw_bytes += local.raw_bytes;
        c.symbol_wire_bytes += local.symbol_wire_bytes;
        c.samples += local.samples;
        c.data_samples += local.data_samples;
        c.stale_markers += local.stale_markers;
        c.max_lag_ms = c.max_lag_ms.max(local.max_lag_ms);
        c.outage_samples += local.outage_samples;
        c.outage_last_arrival_ms = c.outage_last_arrival_ms.max(local.outage_last_arrival_ms);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if proto == WriteProto::V2 {
        let h = resp.headers_mut();
        h.insert(headers::SAMPLES_WRITTEN, HeaderValue::from(written));
        h.insert(headers::HISTOGRAMS_WRITTEN, HeaderValue::from(0u64));
        h.insert(headers::EXEMPLARS_WRITTEN, HeaderValue::from(0u64));
    }
    resp
}
