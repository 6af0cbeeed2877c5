//! Sending one request: the exact headers of the spec, and what each answer means for the
//! queue (done, retry after a delay, drop, or protocol mismatch).

use std::time::{Duration, SystemTime};

use ferry_protocol::WriteProto;
use ferry_protocol::headers::{
    CONTENT_ENCODING_SNAPPY, EXEMPLARS_WRITTEN, HISTOGRAMS_WRITTEN, RETRY_ATTEMPT, SAMPLES_WRITTEN,
};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};

use crate::config::RemoteWrite;
use crate::scrape::fetch::{Fetcher, error_chain};

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Retry, after at least this long if the receiver said so (`Retry-After`).
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// Never retried (4xx other than 429, or 429 with retries off).
    Drop {
        why: String,
    },
    /// RW2 answered 415, or 2xx without `*-Written` headers: the receiver speaks RW1 only.
    Mismatch {
        why: String,
    },
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110), relative to `now`.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let secs = ferry_protocol::time::parse_http_date(v)?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `X-Prometheus-Remote-Write-Version` as a ready name. reqwest copies every request's header
/// map (to follow redirects), and a name or value built from a `&str` is a heap copy that the
/// map's copy has to promote: one allocation per header per request. Static names and values
/// copy for free. (`static`, not `const`: a `HeaderName` holds `Bytes`, which has interior
/// mutability.)
static VERSION: HeaderName = HeaderName::from_static("x-prometheus-remote-write-version");

/// Posts one compressed body.
pub async fn send(
    fetcher: &Fetcher,
    cfg: &RemoteWrite,
    proto: WriteProto,
    body: Vec<u8>,
    attempt: u32,
    counted: (usize, usize),
) -> Outcome {
    let mut req = fetcher
        .client()
        .post(&cfg.url)
        .timeout(cfg.timeout)
        .header(CONTENT_ENCODING, HeaderValue::from_static(CONTENT_ENCODING_SNAPPY))
        .header(CONTENT_TYPE, HeaderValue::from_static(proto.content_type()))
        .header(VERSION.clone(), HeaderValue::from_static(proto.version()))
        .body(body);
    for (k, v) in &cfg.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if attempt > 0 {
        req = req.header(RETRY_ATTEMPT, attempt.to_string());
    }
    let req = match fetcher.prepare(req) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry { why: format!("credentials: {e}"), after: None };
        }
    };
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry {
                why: format!("sending to {}: {}", cfg.url, error_chain(&e)),
                after: None,
            };
        }
    };
    let status = resp.status();
    let after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
        .map(|d| d.min(cfg.max_retry_after));
    let written_headers = [SAMPLES_WRITTEN, HISTOGRAMS_WRITTEN, EXEMPLARS_WRITTEN]
        .iter()
        .any(|h| resp.headers().contains_key(*h));
    let text = if status.is_success() {
        String::new()
    } else {
        resp.text().await.unwrap_or_default().chars().take(1024).collect()
    };
    let code = status.as_u16();
    if status.is_success() {
        if proto == WriteProto::V2 && counted.0 + counted.1 > 0 && !written_headers {
            return Outcome::Mismatch {
                why: format!(
                    "HTTP {code} without X-Prometheus-Remote-Write-*-Written headers to an RW2 request"
                ),
            };
        }
        return Outcome::Sent;
    }
    let why = format!("server returned HTTP status {code}: {}", text.trim());
    if code == 415 && proto == WriteProto::V2 {
        return Outcome::Mismatch { why };
    }
    if status.is_server_error() || (code == 429 && cfg.retry_on_http_429) {
        return Outcome::Retry { why, after };
    }
    Outcome::Drop { why }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_header_name_is_the_specs() {
        let spec = ferry_protocol::headers::VERSION_HEADER;
        assert_eq!(VERSION, HeaderName::from_bytes(spec.as_bytes()).unwrap());
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
