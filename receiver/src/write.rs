//! `POST /api/v1/write`: Remote-Write 1.0 and 2.0 ingest.
//!
//! Checks run in the order the design fixes: credentials → Content-Type → Content-Encoding →
//! body size → snappy → protobuf → per-series validation → rate limit → commit → sync →
//! response. Headers are checked before the body is read, so a bad Content-Type is 415 even
//! when the body is garbage. RW2 answers carry the three `*-Written` headers once content
//! negotiation has succeeded (also on errors); RW1 answers never do. 2xx only after the data
//! is on disk.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_protocol::codec::DecodeError;
use ferry_protocol::headers::{
    EXEMPLARS_WRITTEN, HISTOGRAMS_WRITTEN, SAMPLES_WRITTEN, check_content_encoding, parse_content_type,
};
use ferry_protocol::snappy::SnappyError;
use ferry_protocol::{WriteProto, rw1, rw2};
use prost::Message;

use crate::app::App;
use crate::ingest::{self, Converted, Rules};
use crate::store::{WriteLimits, Written};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut msg = msg.into();
    if !msg.ends_with('\n') {
        msg.push('\n');
    }
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}

/// A response to a request whose protocol is known; RW2 ones get the `*-Written` headers.
fn reply(proto: WriteProto, status: StatusCode, written: Written, body: String) -> Response {
    let mut resp = if body.is_empty() { status.into_response() } else { text(status, body) };
    if proto == WriteProto::V2 {
        let h = resp.headers_mut();
        for (name, n) in [
            (SAMPLES_WRITTEN, written.samples),
            (HISTOGRAMS_WRITTEN, written.histograms),
            (EXEMPLARS_WRITTEN, written.exemplars),
        ] {
            h.insert(name, HeaderValue::from(n));
        }
    }
    resp
}

pub async fn handle(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let (proto_label, resp) = write(&app, &headers, body).await;
    app.metrics.request(proto_label, resp.status().as_u16());
    resp
}

async fn write(app: &App, headers: &HeaderMap, body: Body) -> (&'static str, Response) {
    let tenant = match app.auth.tenant(headers) {
        Ok(t) => t,
        Err(d) => return ("unknown", text(d.status, d.msg)),
    };
    let proto = match parse_content_type(header_str(headers, header::CONTENT_TYPE)) {
        Ok(p) => p,
        Err(e) => return ("unknown", text(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string())),
    };
    let label = match proto {
        WriteProto::V1 => "rw1",
        WriteProto::V2 => "rw2",
    };
    if let Err(e) = check_content_encoding(header_str(headers, header::CONTENT_ENCODING)) {
        return (label, text(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string()));
    }
    let zero = Written::default();
    let max = app.config.max_request_bytes;
    let too_large = |what: String| reply(proto, StatusCode::PAYLOAD_TOO_LARGE, zero, what);
    let declared = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return (
            label,
            too_large(format!(
                "request body of {} bytes is over the limit of {max} bytes",
                declared.unwrap_or(0)
            )),
        );
    }
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(e) => {
            let msg = format!("reading the request body failed (limit {max} bytes): {e}");
            return (label, too_large(msg));
        }
    };
    app.metrics.bytes_received.fetch_add(bytes.len() as u64, Relaxed);

    let tenant_cfg = app.config.tenants.get(&tenant);
    let limits = app.config.limits_for(&tenant);
    let rules = Rules { limits: &limits, tenant: tenant_cfg };
    // The common write takes the zero-copy path; anything else (or anything wrong) goes
    // through prost and `ingest`, which produce the exact errors.
    let decoded: Result<Converted, DecodeError> =
        ferry_protocol::snappy::decode_block(&bytes, max).map_err(DecodeError::Snappy).and_then(|raw| {
            let fast = match proto {
                WriteProto::V1 => crate::fast::rw1(&raw, rules),
                WriteProto::V2 => crate::fast::rw2(&raw, rules),
            };
            match fast {
                Some(c) => Ok(c),
                None => match proto {
                    WriteProto::V1 => {
                        rw1::WriteRequest::decode(raw.as_slice()).map(|r| ingest::from_rw1(r, rules))
                    }
                    WriteProto::V2 => {
                        rw2::Request::decode(raw.as_slice()).map(|r| ingest::from_rw2(r, rules))
                    }
                }
                .map_err(DecodeError::Protobuf),
            }
        });
    let converted = match decoded {
        Ok(c) => c,
        Err(DecodeError::Snappy(e @ SnappyError::TooLarge { .. })) => {
            return (label, too_large(e.to_string()));
        }
        Err(e) => return (label, reply(proto, StatusCode::BAD_REQUEST, zero, e.to_string())),
    };

    if let Err(wait) =
        app.limiter.take(&tenant, converted.points, limits.ingestion_rate, limits.ingestion_burst)
    {
        app.metrics.rate_limited.fetch_add(1, Relaxed);
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut resp = reply(
            proto,
            StatusCode::TOO_MANY_REQUESTS,
            zero,
            format!(
                "tenant {tenant:?} is over its ingestion rate of {} samples/s (burst {}); retry after {secs}s",
                limits.ingestion_rate, limits.ingestion_burst
            ),
        );
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return (label, resp);
    }

    let Converted { batch, mut rejected, .. } = converted;
    let now = now_ms();
    let write_limits = WriteLimits {
        min_timestamp: now - app.config.retention.0,
        max_timestamp: now + app.config.max_future.0,
        max_series: limits.max_series,
    };
    let started = Instant::now();
    let store = app.store.clone();
    let tenant_for_store = tenant.clone();
    let committed =
        tokio::task::spawn_blocking(move || store.write(&tenant_for_store, batch, write_limits)).await;
    app.metrics.write_seconds_micros.fetch_add(started.elapsed().as_micros() as u64, Relaxed);
    let report = match committed {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            app.metrics.storage_errors.fetch_add(1, Relaxed);
            tracing::error!(tenant, error = %e, "write failed in storage; nothing committed, the sender should retry");
            return (label, reply(proto, StatusCode::INTERNAL_SERVER_ERROR, zero, e.to_string()));
        }
        Err(e) => {
            app.metrics.storage_errors.fetch_add(1, Relaxed);
            return (
                label,
                reply(proto, StatusCode::INTERNAL_SERVER_ERROR, zero, format!("write task failed: {e}")),
            );
        }
    };
    let synced = Instant::now();
    if let Err(e) = app.store.sync().await {
        app.metrics.storage_errors.fetch_add(1, Relaxed);
        tracing::error!(tenant, error = %e, "flushing to disk failed; answering 500 so the sender retries");
        return (
            label,
            reply(proto, StatusCode::INTERNAL_SERVER_ERROR, zero, format!("flushing to disk failed: {e}")),
        );
    }
    app.metrics.sync_seconds_micros.fetch_add(synced.elapsed().as_micros() as u64, Relaxed);
    let w = report.written;
    app.metrics.samples_written.fetch_add(w.samples, Relaxed);
    app.metrics.histograms_written.fetch_add(w.histograms, Relaxed);
    app.metrics.exemplars_written.fetch_add(w.exemplars, Relaxed);

    rejected.extend(report.rejected);
    if rejected.is_empty() {
        return (label, reply(proto, StatusCode::NO_CONTENT, w, String::new()));
    }
    app.metrics.series_rejected.fetch_add(rejected.len() as u64, Relaxed);
    let body = format!(
        "{} problem(s); written: {} samples, {} histograms, {} exemplars; rejected:\n{}",
        rejected.len(),
        w.samples,
        w.histograms,
        w.exemplars,
        rejected.join("\n")
    );
    (label, reply(proto, StatusCode::BAD_REQUEST, w, body))
}
