//! Receiver mode: crafted RW1 and RW2 requests against any receiver, checking status codes,
//! the `*-Written` headers, partial writes, 415 for content types and encodings it does not
//! take, and (with a remote-read URL) that what was stored is exactly what was sent.
//!
//! Every case uses fresh metric names and current timestamps, so runs do not collide.

use std::time::{SystemTime, UNIX_EPOCH};

use ferry_protocol::codec::{Encoder, decode_body};
use ferry_protocol::headers::{CONTENT_TYPE_RW2, EXEMPLARS_WRITTEN, HISTOGRAMS_WRITTEN, SAMPLES_WRITTEN};
use ferry_protocol::read::{LabelMatcher, Query, ReadRequest, ReadResponse};
use ferry_protocol::rw2::histogram::Count;
use ferry_protocol::{STALE_NAN, rw1, rw2};

use crate::report::{CaseResult, Level, Outcome};

#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub remote_read_url: Option<String>,
    pub headers: Vec<(String, String)>,
}

struct Reply {
    status: u16,
    written: [Option<u64>; 3],
    body: String,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

struct Ctx {
    client: reqwest::Client,
    target: Target,
    run: String,
}

impl Ctx {
    fn name(&self, case: &str) -> String {
        format!("conformance_{}_{}", case, self.run)
    }

    async fn post(
        &self,
        content_type: Option<&str>,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let mut req = self.client.post(&self.target.url).body(body);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(ce) = encoding {
            req = req.header("Content-Encoding", ce);
        }
        for (k, v) in &self.target.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let get =
            |h: &str| resp.headers().get(h).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
        let written = [get(SAMPLES_WRITTEN), get(HISTOGRAMS_WRITTEN), get(EXEMPLARS_WRITTEN)];
        let body = resp.text().await.unwrap_or_default();
        Ok(Reply { status, written, body })
    }

    async fn rw1(&self, req: &rw1::WriteRequest) -> Result<Reply, String> {
        self.post(Some("application/x-protobuf"), Some("snappy"), Encoder::default().encode(req)).await
    }

    async fn rw2(&self, req: &rw2::Request) -> Result<Reply, String> {
        self.post(Some(CONTENT_TYPE_RW2), Some("snappy"), Encoder::default().encode(req)).await
    }

    /// Float samples stored for `name`, via remote read.
    async fn read_back(&self, name: &str) -> Option<Result<Vec<(i64, u64)>, String>> {
        let url = self.target.remote_read_url.as_ref()?;
        let req = ReadRequest {
            queries: vec![Query {
                start_timestamp_ms: now_ms() - 3_600_000,
                end_timestamp_ms: now_ms() + 60_000,
                matchers: vec![LabelMatcher { r#type: 0, name: "__name__".into(), value: name.into() }],
                hints: None,
            }],
            accepted_response_types: vec![0],
        };
        let mut r = self
            .client
            .post(url)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Read-Version", "0.1.0")
            .body(Encoder::default().encode(&req));
        for (k, v) in &self.target.headers {
            r = r.header(k.as_str(), v.as_str());
        }
        let result = async {
            let resp = r.send().await.map_err(|e| format!("remote read failed: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("remote read answered {}", resp.status()));
            }
            let body = resp.bytes().await.map_err(|e| e.to_string())?;
            let rr: ReadResponse =
                decode_body(&body, 64 << 20).map_err(|e| format!("remote read response: {e}"))?;
            Ok(rr
                .results
                .iter()
                .flat_map(|q| q.timeseries.iter())
                .flat_map(|ts| ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())))
                .collect())
        }
        .await;
        Some(result)
    }
}

/// An RW2 request builder: interns strings in the order given (refs can be unsorted).
#[derive(Default)]
struct V2(rw2::Request);

impl V2 {
    fn sym(&mut self, s: &str) -> u32 {
        if self.0.symbols.is_empty() {
            self.0.symbols.push(String::new());
        }
        match self.0.symbols.iter().position(|x| x == s) {
            Some(i) => i as u32,
            None => {
                self.0.symbols.push(s.to_owned());
                (self.0.symbols.len() - 1) as u32
            }
        }
    }
    fn series(&mut self, labels: &[(&str, &str)], samples: &[(i64, f64)]) -> &mut rw2::TimeSeries {
        let refs: Vec<u32> = labels.iter().flat_map(|(n, v)| [self.sym(n), self.sym(v)]).collect();
        self.0.timeseries.push(rw2::TimeSeries {
            labels_refs: refs,
            samples: samples
                .iter()
                .map(|&(timestamp, value)| rw2::Sample { value, timestamp, start_timestamp: 0 })
                .collect(),
            ..Default::default()
        });
        self.0.timeseries.last_mut().expect("pushed")
    }
    fn done(mut self) -> rw2::Request {
        self.sym("");
        self.0
    }
}

fn rw1_one(name: &str, ts: i64, v: f64) -> rw1::WriteRequest {
    rw1::WriteRequest {
        timeseries: vec![rw1::TimeSeries {
            labels: vec![rw1::Label::new("__name__", name), rw1::Label::new("job", "conformance")],
            samples: vec![rw1::Sample { value: v, timestamp: ts }],
            ..Default::default()
        }],
        metadata: vec![],
    }
}

fn check(ok: bool, why: impl FnOnce() -> String) -> Outcome {
    if ok { Outcome::Pass } else { Outcome::Fail(why()) }
}

fn status_in(r: &Result<Reply, String>, want: &[u16], what: &str) -> Outcome {
    match r {
        Ok(r) => {
            check(want.contains(&r.status), || format!("{what}: got HTTP {} ({})", r.status, r.body.trim()))
        }
        Err(e) => Outcome::Fail(e.clone()),
    }
}

/// Runs every receiver case in order.
pub async fn run(target: Target) -> Vec<CaseResult> {
    let ctx = Ctx { client: reqwest::Client::new(), target, run: format!("{:x}", now_ms()) };
    let mut out = Vec::new();
    let mut push = |id, level, clause, outcome| out.push(CaseResult { id, level, clause, outcome });
    let t = now_ms();

    // RW1 basics.
    let r = ctx.rw1(&rw1_one(&ctx.name("rw1"), t, 1.0)).await;
    push(
        "rw1_valid_request_is_2xx",
        Level::Must,
        "RW 1.0 §Retries & Backoff: success is 2xx",
        status_in(&r, &[200, 201, 202, 204], "valid RW1"),
    );
    push(
        "rw1_answer_has_no_written_headers",
        Level::Should,
        "RW 2.0 §Responses: Written headers are for io.prometheus.write.v2.Request",
        match &r {
            Ok(r) => {
                check(r.written.iter().all(Option::is_none), || "RW1 answer carries *-Written headers".into())
            }
            Err(e) => Outcome::Fail(e.clone()),
        },
    );

    // RW2 basics, exact counts.
    let name = ctx.name("rw2");
    let mut v2 = V2::default();
    v2.series(&[("__name__", &name), ("job", "conformance")], &[(t, 1.0), (t + 1, 2.0)]);
    let r = ctx.rw2(&v2.done()).await;
    push(
        "rw2_valid_request_is_2xx",
        Level::Must,
        "RW 2.0 §Responses L136: full success MUST be 2xx",
        status_in(&r, &[200, 201, 202, 204], "valid RW2"),
    );
    push(
        "rw2_success_is_204",
        Level::Should,
        "RW 2.0 §Responses L136: status SHOULD be 204",
        status_in(&r, &[204], "valid RW2"),
    );
    push(
        "rw2_written_headers_exact",
        Level::Must,
        "RW 2.0 §Responses L147: *-Written headers with precise counts",
        match &r {
            Ok(r) => check(r.written == [Some(2), Some(0), Some(0)], || {
                format!("Written headers {:?}, want samples 2, histograms 0, exemplars 0", r.written)
            }),
            Err(e) => Outcome::Fail(e.clone()),
        },
    );

    // Content negotiation: 415 before the body is looked at.
    let corrupt = vec![b'0', 0xff, 0x00, 0x13];
    let r = ctx.post(Some("application/json"), Some("snappy"), corrupt.clone()).await;
    push(
        "unsupported_content_type_is_415",
        Level::Must,
        "RW 2.0 §Responses L178: 415 for an unsupported content type",
        status_in(&r, &[415], "Content-Type: application/json"),
    );
    let r =
        ctx.post(Some("application/x-protobuf;proto=io.example.Nope"), Some("snappy"), corrupt.clone()).await;
    push(
        "unknown_proto_message_is_415",
        Level::Must,
        "RW 2.0 §Content-Type L114: receivers choose the schema by Content-Type",
        status_in(&r, &[415], "proto=io.example.Nope"),
    );
    let r = ctx.post(Some(CONTENT_TYPE_RW2), Some("gzip"), corrupt.clone()).await;
    push(
        "unsupported_encoding_is_415",
        Level::Must,
        "RW 2.0 §Responses L178: 415 for an unsupported encoding",
        status_in(&r, &[415], "Content-Encoding: gzip"),
    );

    // Bad bodies are 4xx, never 5xx (a sender would retry them forever).
    let r = ctx.post(Some(CONTENT_TYPE_RW2), Some("snappy"), corrupt).await;
    push(
        "corrupt_snappy_is_400",
        Level::Must,
        "RW 2.0 §Responses L186: 4xx for what will never succeed",
        status_in(&r, &[400], "corrupt snappy"),
    );
    let mut framed = vec![0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'];
    framed.extend_from_slice(&[0x01, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    let r = ctx.post(Some("application/x-protobuf"), Some("snappy"), framed).await;
    push(
        "framed_snappy_is_rejected",
        Level::Must,
        "RW 1.0 §Protocol: the framed format MUST NOT be used",
        status_in(&r, &[400, 415], "framed snappy"),
    );

    // Partial writes: valid series committed, the request still non-2xx, counts exact.
    let name = ctx.name("partial");
    let mut v2 = V2::default();
    v2.series(&[("__name__", &name)], &[(t, 1.0)]);
    v2.series(&[("job", "no-name")], &[(t, 1.0)]);
    let r = ctx.rw2(&v2.done()).await;
    push(
        "partial_write_is_not_2xx",
        Level::Must,
        "RW 2.0 §Responses L138: MUST NOT be 2xx if anything was not written",
        status_in(&r, &[400], "one series without a name"),
    );
    push(
        "partial_write_counts_what_was_written",
        Level::Must,
        "RW 2.0 §Responses L147: Written headers on success and failure",
        match &r {
            Ok(r) => check(r.written[0].is_some_and(|n| n <= 1), || {
                format!("Samples-Written {:?}, want 0 or 1", r.written[0])
            }),
            Err(e) => Outcome::Fail(e.clone()),
        },
    );
    push(
        "error_body_is_human_readable",
        Level::Must,
        "RW 2.0 §Responses L138: a human-readable error body",
        match &r {
            Ok(r) => check(!r.body.trim().is_empty(), || "empty error body".into()),
            Err(e) => Outcome::Fail(e.clone()),
        },
    );

    // Symbol references.
    let mut v2 = V2::default();
    v2.series(&[("__name__", "x")], &[(t, 1.0)]).labels_refs.push(1);
    let r = ctx.rw2(&v2.done()).await;
    push(
        "odd_label_refs_are_400",
        Level::Must,
        "RW 2.0 §Protobuf: labels_refs length is a multiple of two",
        status_in(&r, &[400], "three label refs"),
    );
    let mut v2 = V2::default();
    v2.series(&[("__name__", "x")], &[(t, 1.0)]).labels_refs[1] = 9999;
    let r = ctx.rw2(&v2.done()).await;
    push(
        "out_of_range_ref_is_400",
        Level::Must,
        "RW 2.0 §Protobuf L382: references MUST point to the existing index",
        status_in(&r, &[400], "ref 9999"),
    );
    let name = ctx.name("unsorted");
    let mut v2 = V2::default();
    v2.series(&[("job", "conformance"), ("__name__", &name)], &[(t, 1.0)]);
    let r = ctx.rw2(&v2.done()).await;
    push(
        "unsorted_label_refs_are_accepted",
        Level::May,
        "Prometheus accepts and sorts them; the public receiver suite sends them",
        status_in(&r, &[200, 204], "unsorted refs"),
    );

    // Samples: duplicates, order, bounds, special values.
    let name = ctx.name("dup");
    let _ = ctx.rw1(&rw1_one(&name, t, 5.0)).await;
    let r = ctx.rw1(&rw1_one(&name, t, 5.0)).await;
    push(
        "exact_duplicate_is_accepted",
        Level::Should,
        "TSDB semantics: a retry must not fail (idempotent writes)",
        status_in(&r, &[200, 204], "same sample twice"),
    );
    let r = ctx.rw1(&rw1_one(&name, t, 6.0)).await;
    push(
        "conflicting_duplicate_is_400",
        Level::Should,
        "RW 2.0 §Responses L184: invalid samples MUST be 400",
        status_in(&r, &[400], "same timestamp, other value"),
    );
    let r = ctx.rw1(&rw1_one(&name, t - 60_000, 1.0)).await;
    push(
        "out_of_order_is_400",
        Level::Should,
        "RW 2.0 §Responses L184: invalid samples MUST be 400",
        status_in(&r, &[400], "older than the newest sample"),
    );
    let r = ctx.rw1(&rw1_one(&ctx.name("future"), t + 3_600_000, 1.0)).await;
    push(
        "far_future_is_400",
        Level::Should,
        "Prometheus rejects samples more than 10 min ahead",
        status_in(&r, &[400], "one hour in the future"),
    );

    // Histograms.
    let name = ctx.name("hist");
    let h = |count| rw2::Histogram {
        count: Some(Count::CountInt(count)),
        sum: 3.0,
        positive_spans: vec![rw2::BucketSpan { offset: 0, length: 2 }],
        positive_deltas: vec![1, 1],
        timestamp: t,
        ..Default::default()
    };
    let mut v2 = V2::default();
    v2.series(&[("__name__", &name)], &[]).histograms.push(h(3));
    let r = ctx.rw2(&v2.done()).await;
    push(
        "valid_histogram_is_counted",
        Level::Must,
        "RW 2.0 §Responses L147: Histograms-Written",
        match &r {
            Ok(r) => check((200..300).contains(&r.status) && r.written[1] == Some(1), || {
                format!("HTTP {} Histograms-Written {:?}", r.status, r.written[1])
            }),
            Err(e) => Outcome::Fail(e.clone()),
        },
    );
    let mut v2 = V2::default();
    v2.series(&[("__name__", &ctx.name("badhist"))], &[]).histograms.push(h(99));
    let r = ctx.rw2(&v2.done()).await;
    push(
        "invalid_histogram_is_400",
        Level::Must,
        "RW 2.0 §Responses L184: invalid samples MUST be 400",
        status_in(&r, &[400], "count does not match buckets"),
    );

    // Stored exactly: the stale marker's bits survive (needs remote read).
    let name = ctx.name("stale");
    let mut v2 = V2::default();
    v2.series(&[("__name__", &name)], &[(t, 1.0), (t + 1000, STALE_NAN), (t + 2000, f64::NAN)]);
    let wrote = ctx.rw2(&v2.done()).await;
    let outcome = match ctx.read_back(&name).await {
        None => Outcome::NotApplicable("no --remote-read-url given".into()),
        Some(Err(e)) => Outcome::Fail(e),
        Some(Ok(got)) => {
            let want =
                vec![(t, 1.0f64.to_bits()), (t + 1000, STALE_NAN.to_bits()), (t + 2000, f64::NAN.to_bits())];
            check(wrote.as_ref().is_ok_and(|w| w.status < 300) && got == want, || {
                format!("read back {got:?}, want {want:?}")
            })
        }
    };
    push(
        "stale_marker_stored_bit_exact",
        Level::Must,
        "RW 2.0 §Stale markers L428: the marker is exactly 0x7ff0000000000002",
        outcome,
    );
    out
}
