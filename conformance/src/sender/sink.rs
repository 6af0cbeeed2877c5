//! The scripted receiver a sender writes to: it records every request (arrival time, headers,
//! the raw body and what it decodes to) and answers as the case's script says (status, extra
//! headers, `*-Written` headers or not, a delay, or refusing connections for a while).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_protocol::codec::decode_body;
use ferry_protocol::headers::{self, WriteProto};
use ferry_protocol::{rw1, rw2, symbols};

/// One time series as received, labels in wire order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    /// (timestamp ms, value)
    pub samples: Vec<(i64, f64)>,
    pub histograms: usize,
    pub exemplars: usize,
    /// RW2 only: (type, help, unit).
    pub metadata: Option<(i32, String, String)>,
}

impl Series {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn name(&self) -> &str {
        self.label("__name__").unwrap_or("")
    }
}

/// What a request body decoded to.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub proto: WriteProto,
    pub series: Vec<Series>,
    /// RW2: the symbol table as sent.
    pub symbols: Vec<String>,
    /// RW2: problems resolving references (each is a spec violation).
    pub ref_errors: Vec<String>,
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
    pub decoded: Result<Decoded, String>,
    /// The status this sink answered.
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn series(&self) -> &[Series] {
        self.decoded.as_ref().map(|d| d.series.as_slice()).unwrap_or(&[])
    }
}

/// How the sink answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Send `*-Written` headers on a 2xx RW2 answer (what a conforming receiver does).
    pub written: bool,
    pub delay: Duration,
    /// After answering, refuse connections for this long (an outage).
    pub refuse_for: Option<Duration>,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply { status: 204, headers: Vec::new(), written: true, delay: Duration::ZERO, refuse_for: None }
    }

    pub fn status(status: u16) -> Reply {
        Reply { status, ..Reply::ok() }
    }
}

/// Decides the answer to the `n`th request (0-based) from what it holds.
pub type Script = Arc<dyn Fn(usize, &Result<Decoded, String>) -> Reply + Send + Sync>;

/// Decodes a request body by its Content-Type.
pub fn decode(headers: &BTreeMap<String, String>, body: &[u8]) -> Result<Decoded, String> {
    if headers.get("content-encoding").map(String::as_str) != Some("snappy") {
        return Err(format!("Content-Encoding is {:?}, not snappy", headers.get("content-encoding")));
    }
    let proto = headers::parse_content_type(headers.get("content-type").map(String::as_str))
        .map_err(|e| e.to_string())?;
    const MAX: usize = 64 << 20;
    match proto {
        WriteProto::V1 => {
            let req: rw1::WriteRequest = decode_body(body, MAX).map_err(|e| e.to_string())?;
            let series = req
                .timeseries
                .into_iter()
                .map(|ts| Series {
                    labels: ts.labels.into_iter().map(|l| (l.name, l.value)).collect(),
                    samples: ts.samples.iter().map(|s| (s.timestamp, s.value)).collect(),
                    histograms: ts.histograms.len(),
                    exemplars: ts.exemplars.len(),
                    metadata: None,
                })
                .collect();
            Ok(Decoded { proto, series, symbols: Vec::new(), ref_errors: Vec::new() })
        }
        WriteProto::V2 => {
            let req: rw2::Request = decode_body(body, MAX).map_err(|e| e.to_string())?;
            let mut ref_errors = Vec::new();
            let sym = |r: u32, errors: &mut Vec<String>| match symbols::resolve_ref(r, &req.symbols) {
                Ok(s) => s.to_owned(),
                Err(e) => {
                    errors.push(e.to_string());
                    String::new()
                }
            };
            let mut series = Vec::new();
            for ts in &req.timeseries {
                let labels = match symbols::resolve_labels(&ts.labels_refs, &req.symbols) {
                    Ok(pairs) => pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
                    Err(e) => {
                        ref_errors.push(e.to_string());
                        Vec::new()
                    }
                };
                let metadata = ts
                    .metadata
                    .map(|m| (m.r#type, sym(m.help_ref, &mut ref_errors), sym(m.unit_ref, &mut ref_errors)));
                series.push(Series {
                    labels,
                    samples: ts.samples.iter().map(|s| (s.timestamp, s.value)).collect(),
                    histograms: ts.histograms.len(),
                    exemplars: ts.exemplars.len(),
                    metadata,
                });
            }
            Ok(Decoded { proto, series, symbols: req.symbols, ref_errors })
        }
    }
}

#[derive(Clone)]
struct Shared {
    script: Script,
    log: Arc<Mutex<Vec<Arc<Request>>>>,
    /// Set when the server must stop listening for a while.
    outage: Arc<Mutex<Option<Duration>>>,
    wake: Arc<tokio::sync::Notify>,
}

async fn handle(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let at = Instant::now();
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let decoded = decode(&headers, &body);
    let n = s.log.lock().expect("log lock").len();
    let reply = (s.script)(n, &decoded);
    let written = reply.written && (200..300).contains(&reply.status);
    let counts = match (&decoded, written) {
        (Ok(d), true) if d.proto == WriteProto::V2 => Some((
            d.series.iter().map(|s| s.samples.len()).sum::<usize>(),
            d.series.iter().map(|s| s.histograms).sum::<usize>(),
        )),
        _ => None,
    };
    s.log.lock().expect("log lock").push(Arc::new(Request {
        at,
        headers,
        body,
        decoded,
        status: reply.status,
    }));
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if let Some(d) = reply.refuse_for {
        *s.outage.lock().expect("outage lock") = Some(d);
        s.wake.notify_one();
    }
    let mut resp =
        (StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "").into_response();
    for (k, v) in &reply.headers {
        if let (Ok(k), Ok(v)) = (k.parse::<axum::http::HeaderName>(), v.parse()) {
            resp.headers_mut().insert(k, v);
        }
    }
    if let Some((samples, histograms)) = counts {
        let h = resp.headers_mut();
        h.insert(headers::SAMPLES_WRITTEN, samples.into());
        h.insert(headers::HISTOGRAMS_WRITTEN, histograms.into());
        h.insert(headers::EXEMPLARS_WRITTEN, 0.into());
    }
    resp
}

/// A running sink.
#[derive(Debug)]
pub struct Sink {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Arc<Request>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    /// Listens on loopback; the write URL is `http://{addr}/api/v1/write`.
    pub async fn start(script: Script) -> std::io::Result<Sink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared =
            Shared { script, log: log.clone(), outage: Default::default(), wake: Default::default() };
        let task = tokio::spawn(serve(listener, addr, shared));
        Ok(Sink { addr, log, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// The requests so far (shared, so that a case can look at them often without copying
    /// what they decoded to).
    pub fn requests(&self) -> Vec<Arc<Request>> {
        self.log.lock().expect("log lock").clone()
    }
}

/// Serves until an outage is asked for, closes the listener (connections are refused) for
/// its length, then listens again on the same address.
async fn serve(mut listener: tokio::net::TcpListener, addr: SocketAddr, shared: Shared) {
    loop {
        let app = axum::Router::new().fallback(axum::routing::post(handle)).with_state(shared.clone());
        let wake = shared.wake.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move { wake.notified().await });
        let _ = server.await;
        let pause = shared.outage.lock().expect("outage lock").take().unwrap_or_default();
        tokio::time::sleep(pause).await;
        listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
    }
}
