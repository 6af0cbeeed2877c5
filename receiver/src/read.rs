//! The read API, in the shapes of Prometheus' HTTP API: `series`, `labels`, `label/<n>/values`,
//! `query` and `query_range` for series selectors, a JSON-lines `export`, and remote read.
//!
//! Values are written as Prometheus writes them (strings: `"1.5"`, `"NaN"`, `"+Inf"`); export
//! writes the staleness marker as `"StaleNaN"` so it can be told from an ordinary NaN, and
//! remote read returns it bit-exact.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_protocol::codec::{Encoder, decode_body};
use ferry_protocol::read::{MatchType, QueryResult, ReadRequest, ReadResponse};
use ferry_protocol::{LabelSet, is_stale, rw1, rw2};
use prost::Message;
use serde_json::{Value, json};

use crate::app::App;
use crate::selector::{self, MatchKind, Matcher, Selector};
use crate::store::StoreError;
use crate::write::now_ms;

/// Prometheus' default lookback for instant vectors.
const LOOKBACK_MS: i64 = 5 * 60_000;
/// Prometheus' cap on points per series in a range query.
const MAX_POINTS: i64 = 11_000;

#[derive(Debug)]
pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.1, "error": self.2});
        (self.0, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_data", msg.into())
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// Query-string and form parameters together (GET and POST, as Prometheus accepts both).
#[derive(Debug)]
struct Params(Vec<(String, String)>);

impl Params {
    fn new(query: Option<String>, method: &Method, headers: &HeaderMap, body: &[u8]) -> Params {
        let mut v: Vec<(String, String)> =
            form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if method == Method::POST && is_form {
            v.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(v)
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    fn all(&self, k: &str) -> Vec<&str> {
        self.0.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect()
    }
    fn time(&self, k: &str, default: i64) -> Result<i64, ApiError> {
        self.get(k)
            .map_or(Ok(default), |v| parse_time(v).ok_or_else(|| bad(format!("invalid time {k}={v:?}"))))
    }
}

/// Unix seconds (with fraction) or RFC 3339, to milliseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(f) = s.parse::<f64>() {
        return f.is_finite().then(|| (f * 1000.0).round() as i64);
    }
    // RFC 3339: 2026-11-21T10:00:00(.123)?(Z|±hh:mm)
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, sec) =
        (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut ms = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        ms = format!("{frac:0<3}")[..3].parse::<i64>().ok()?;
    }
    let offset_min = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6 => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz[1..3].parse::<i64>().ok()? * 60 + tz[4..6].parse::<i64>().ok()?)
        }
        _ => return None,
    };
    let days = ferry_protocol::time::days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60) * 1000) + ms)
}

fn format_value(bits: u64) -> String {
    let v = f64::from_bits(bits);
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn ts_json(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn labels_json(ls: &LabelSet) -> Value {
    Value::Object(ls.iter().map(|l| (l.name.clone(), Value::String(l.value.clone()))).collect())
}

fn parse_selectors(list: &[&str]) -> Result<Vec<Selector>, ApiError> {
    if list.is_empty() {
        return Err(bad("no match[] parameter provided"));
    }
    list.iter().map(|s| selector::parse(s).map_err(|e| bad(format!("{s:?}: {e}")))).collect()
}

/// Series matching any of the selectors, deduplicated, sorted by labels.
fn select_all(app: &App, tenant: &str, sels: &[Selector]) -> Result<Vec<(u64, LabelSet)>, ApiError> {
    let mut out = Vec::new();
    for s in sels {
        out.extend(app.store.select(tenant, &s.matchers)?);
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out.dedup_by_key(|s| s.0);
    Ok(out)
}

/// What every read handler starts from: the tenant (from credentials or `X-Scope-OrgID`)
/// and the parameters, from the query string and, for POST, a form body.
#[derive(Debug)]
pub struct ApiRequest {
    tenant: String,
    params: Params,
}

impl axum::extract::FromRequest<Arc<App>> for ApiRequest {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, app: &Arc<App>) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let tenant =
            app.auth.tenant(&parts.headers).map_err(|d| ApiError(d.status, "unauthorized", d.msg))?;
        let body = axum::body::to_bytes(body, app.config.max_request_bytes)
            .await
            .map_err(|e| bad(format!("reading the body: {e}")))?;
        let params = Params::new(parts.uri.query().map(str::to_owned), &parts.method, &parts.headers, &body);
        Ok(ApiRequest { tenant, params })
    }
}

pub async fn series(
    State(app): State<Arc<App>>,
    ApiRequest { tenant, params: p }: ApiRequest,
) -> Result<Response, ApiError> {
    let sels = parse_selectors(&p.all("match[]"))?;
    let found = select_all(&app, &tenant, &sels)?;
    Ok(success(Value::Array(found.iter().map(|(_, ls)| labels_json(ls)).collect())))
}

pub async fn labels(
    State(app): State<Arc<App>>,
    ApiRequest { tenant, params: p }: ApiRequest,
) -> Result<Response, ApiError> {
    let matches = p.all("match[]");
    let names = if matches.is_empty() {
        app.store.label_names(&tenant)?
    } else {
        let mut names: Vec<String> = select_all(&app, &tenant, &parse_selectors(&matches)?)?
            .iter()
            .flat_map(|(_, ls)| ls.iter().map(|l| l.name.clone()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    Ok(success(json!(names)))
}

pub async fn label_values(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    ApiRequest { tenant, params: p }: ApiRequest,
) -> Result<Response, ApiError> {
    let matches = p.all("match[]");
    let values = if matches.is_empty() {
        app.store.label_values(&tenant, &name)?
    } else {
        let mut values: Vec<String> = select_all(&app, &tenant, &parse_selectors(&matches)?)?
            .iter()
            .filter_map(|(_, ls)| ls.get(&name).map(str::to_owned))
            .collect();
        values.sort_unstable();
        values.dedup();
        values
    };
    Ok(success(json!(values)))
}

/// Prometheus' metric type names, by RW2 `MetricType` number.
fn type_name(kind: i32) -> &'static str {
    match kind {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

/// `GET /api/v1/metadata[?metric=name]`.
pub async fn metadata(
    State(app): State<Arc<App>>,
    ApiRequest { tenant, params: p }: ApiRequest,
) -> Result<Response, ApiError> {
    let all = match p.get("metric") {
        Some(m) => app.store.metadata(&tenant, m)?.map(|md| (m.to_owned(), md)).into_iter().collect(),
        None => app.store.all_metadata(&tenant)?,
    };
    let data: serde_json::Map<String, Value> = all
        .into_iter()
        .map(|(name, md)| (name, json!([{"type": type_name(md.kind), "help": md.help, "unit": md.unit}])))
        .collect();
    Ok(success(Value::Object(data)))
}

fn one_selector(p: &Params) -> Result<Selector, ApiError> {
    let q = p.get("query").ok_or_else(|| bad("missing query parameter"))?;
    selector::parse(q).map_err(|e| bad(e.0))
}

pub async fn query(
    State(app): State<Arc<App>>,
    ApiRequest { tenant, params: p }: ApiRequest,
) -> Result<Response, ApiError> {
    let sel = one_selector(&p)?;
    let t = p.time("time", now_ms())?;
    let mut result = Vec::new();
    for (id, ls) in app.store.select(&tenant, &sel.matchers)? {
        match sel.range_ms {
            Some(range) => {
                // A range vector: raw samples in (t - range, t], stale markers left out.
                let values: Vec<Value> = app
                    .store
                    .samples(id, t - range + 1, t)?
                    .into_iter()
                    .filter(|&(_, v)| !is_stale(f64::from_bits(v)))
                    .map(|(ts, v)| json!([ts_json(ts), format_value(v)]))
                    .collect();
                if !values.is_empty() {
                    result.push(json!({"metric": labels_json(&ls), "values": values}));
                }
            }
            None => {
                let last = app.store.samples(id, t - LOOKBACK_MS + 1, t)?.pop();
                if let Some((_, v)) = last.filter(|&(_, v)| !is_stale(f64::from_bits(v))) {
                    result.push(json!({"metric": labels_json(&ls), "value": [ts_json(t), format_value(v)]}));
                }
            }
        }
    }
    let kind = if sel.range_ms.is_some() { "matrix" } else { "vector" };
    Ok(success(json!({"resultType": kind, "result": result})))
}

pub async fn query_range(
    State(app): State<Arc<App>>,
    ApiRequest { tenant, params: p }: ApiRequest,
) -> Result<Response, ApiError> {
    let sel = one_selector(&p)?;
    if sel.range_ms.is_some() {
        return Err(bad("range vector selectors are not allowed in a range query; use /api/v1/query"));
    }
    let start = p.get("start").and_then(parse_time).ok_or_else(|| bad("missing or invalid start"))?;
    let end = p.get("end").and_then(parse_time).ok_or_else(|| bad("missing or invalid end"))?;
    let step = p
        .get("step")
        .and_then(|s| parse_time(s).or_else(|| selector::parse_duration(s).ok()))
        .filter(|&s| s > 0)
        .ok_or_else(|| bad("missing or invalid step: give a positive duration or number of seconds"))?;
    if end < start {
        return Err(bad("end timestamp must not be before start time"));
    }
    if (end - start) / step >= MAX_POINTS {
        return Err(bad(format!("exceeded maximum resolution of {MAX_POINTS} points per timeseries")));
    }
    let mut result = Vec::new();
    for (id, ls) in app.store.select(&tenant, &sel.matchers)? {
        let samples = app.store.samples(id, start - LOOKBACK_MS + 1, end)?;
        let (mut values, mut i, mut t) = (Vec::new(), 0usize, start);
        while t <= end {
            while i < samples.len() && samples[i].0 <= t {
                i += 1;
            }
            // The newest sample at or before t, if within the lookback and not a marker.
            if let Some(&(ts, v)) = i.checked_sub(1).and_then(|j| samples.get(j))
                && ts > t - LOOKBACK_MS
                && !is_stale(f64::from_bits(v))
            {
                values.push(json!([ts_json(t), format_value(v)]));
            }
            t += step;
        }
        if !values.is_empty() {
            result.push(json!({"metric": labels_json(&ls), "values": values}));
        }
    }
    Ok(success(json!({"resultType": "matrix", "result": result})))
}

/// One JSON object per series and line: `{"metric":{…},"values":[…],"timestamps":[…]}` with
/// millisecond timestamps, plus `"histograms"` (RW2 protobuf fields as JSON) and
/// `"exemplars"` when present.
pub async fn export(
    State(app): State<Arc<App>>,
    ApiRequest { tenant, params: p }: ApiRequest,
) -> Result<Response, ApiError> {
    let sels = parse_selectors(&p.all("match[]"))?;
    let start = p.time("start", i64::MIN)?;
    let end = p.time("end", i64::MAX)?;
    let mut out = String::new();
    for (id, ls) in select_all(&app, &tenant, &sels)? {
        let samples = app.store.samples(id, start, end)?;
        let hists = app.store.histograms(id, start, end)?;
        if samples.is_empty() && hists.is_empty() {
            continue;
        }
        let values: Vec<String> = samples
            .iter()
            .map(|&(_, v)| if is_stale(f64::from_bits(v)) { "StaleNaN".into() } else { format_value(v) })
            .collect();
        let timestamps: Vec<i64> = samples.iter().map(|s| s.0).collect();
        let mut line = json!({"metric": labels_json(&ls), "values": values, "timestamps": timestamps});
        if !hists.is_empty() {
            let hs: Vec<Value> = hists
                .iter()
                .filter_map(|(ts, b)| {
                    rw2::Histogram::decode(b.as_slice()).ok().map(|h| histogram_json(*ts, &h))
                })
                .collect();
            line["histograms"] = Value::Array(hs);
        }
        let exemplars = app.store.exemplars(id, start, end)?;
        if !exemplars.is_empty() {
            line["exemplars"] = Value::Array(
                exemplars
                    .iter()
                    .map(|e| json!({"labels": labels_json(&e.labels), "value": format_value(e.value.to_bits()), "timestamp": e.timestamp}))
                    .collect(),
            );
        }
        out.push_str(&line.to_string());
        out.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}

fn histogram_json(ts: i64, h: &rw2::Histogram) -> Value {
    use rw2::histogram::{Count, ZeroCount};
    let count = match h.count {
        Some(Count::CountInt(c)) => c as f64,
        Some(Count::CountFloat(c)) => c,
        None => 0.0,
    };
    let zero = match h.zero_count {
        Some(ZeroCount::ZeroCountInt(c)) => c as f64,
        Some(ZeroCount::ZeroCountFloat(c)) => c,
        None => 0.0,
    };
    json!({
        "timestamp": ts, "count": count, "sum": format_value(h.sum.to_bits()), "schema": h.schema,
        "zero_threshold": h.zero_threshold, "zero_count": zero,
        "positive_spans": h.positive_spans.iter().map(|s| [s.offset as i64, s.length as i64]).collect::<Vec<_>>(),
        "positive_deltas": h.positive_deltas, "positive_counts": h.positive_counts,
        "negative_spans": h.negative_spans.iter().map(|s| [s.offset as i64, s.length as i64]).collect::<Vec<_>>(),
        "negative_deltas": h.negative_deltas, "negative_counts": h.negative_counts,
        "custom_values": h.custom_values, "start_timestamp": h.start_timestamp,
    })
}

/// `POST /api/v1/read`: remote read, SAMPLES response, snappy-compressed protobuf.
pub async fn remote_read(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = app.auth.tenant(&headers).map_err(|d| ApiError(d.status, "unauthorized", d.msg))?;
    let req: ReadRequest = decode_body(&body, app.config.max_request_bytes)
        .map_err(|e| bad(format!("invalid remote read request: {e}")))?;
    let mut resp = ReadResponse::default();
    for q in req.queries {
        let matchers = q
            .matchers
            .iter()
            .map(|m| {
                let kind = match MatchType::try_from(m.r#type) {
                    Ok(MatchType::Eq) => MatchKind::Equal,
                    Ok(MatchType::Neq) => MatchKind::NotEqual,
                    Ok(MatchType::Re) => MatchKind::Regex,
                    Ok(MatchType::Nre) => MatchKind::NotRegex,
                    Err(_) => return Err(bad(format!("unknown matcher type {}", m.r#type))),
                };
                Matcher::new(&m.name, kind, &m.value).map_err(|e| bad(e.0))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if matchers.iter().all(|m| m.matches("")) {
            return Err(bad("a query needs at least one matcher that does not match the empty string"));
        }
        let mut result = QueryResult::default();
        for (id, ls) in app.store.select(&tenant, &matchers)? {
            let samples: Vec<rw1::Sample> = app
                .store
                .samples(id, q.start_timestamp_ms, q.end_timestamp_ms)?
                .into_iter()
                .map(|(timestamp, v)| rw1::Sample { value: f64::from_bits(v), timestamp })
                .collect();
            let histograms: Vec<rw1::Histogram> = app
                .store
                .histograms(id, q.start_timestamp_ms, q.end_timestamp_ms)?
                .into_iter()
                .filter_map(|(_, b)| rw2::Histogram::decode(b.as_slice()).ok().map(rw1::Histogram::from))
                .collect();
            if samples.is_empty() && histograms.is_empty() {
                continue;
            }
            result.timeseries.push(rw1::TimeSeries {
                labels: ls.into_vec(),
                samples,
                histograms,
                exemplars: vec![],
            });
        }
        resp.results.push(result);
    }
    let body = Encoder::default().encode(&resp);
    Ok(([(header::CONTENT_TYPE, "application/x-protobuf"), (header::CONTENT_ENCODING, "snappy")], body)
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.123"), Some(1_700_000_000_123));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20.5Z"), Some(1_700_000_000_500));
        assert_eq!(parse_time("2023-11-15T00:13:20+02:00"), Some(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn values() {
        assert_eq!(format_value(1.5f64.to_bits()), "1.5");
        assert_eq!(format_value(1e6f64.to_bits()), "1000000");
        assert_eq!(format_value(f64::INFINITY.to_bits()), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY.to_bits()), "-Inf");
        assert_eq!(format_value(f64::NAN.to_bits()), "NaN");
    }
}
