//! The scrape fetch against a hand-written HTTP/1.1 server on loopback, which records every
//! request and connection: headers and credentials, redirects and their rules, connection
//! reuse, and the capped read buffer.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::config::Config;
use crate::scrape::plain_http::{self, MAX_READ_BUF, MAX_REDIRECTS};

/// What the server saw of one request: its path and lower-cased headers.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

type Route = dyn Fn(&str) -> Vec<u8> + Send + Sync;

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

fn ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn redirect(status: &str, location: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n").into_bytes()
}

/// Serves `route(path)` to every GET, keeping connections alive.
async fn serve(route: Arc<Route>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (s, c) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            c.fetch_add(1, Ordering::SeqCst);
            let (s, route) = (s.clone(), route.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8(buf.drain(..end + 4).collect()).unwrap();
                    let mut lines = head.split("\r\n");
                    let path = lines.next().unwrap().split(' ').nth(1).unwrap().to_owned();
                    let headers = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    s.lock().unwrap().push(Seen { path: path.clone(), headers });
                    if sock.write_all(&route(&path)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Server { addr, seen, connections }
}

fn job(extra: &str) -> Job {
    let yaml = format!("scrape_configs:\n  - job_name: t\n{extra}");
    Config::parse(&yaml, Path::new("t.yaml"), false, |_| None).unwrap().jobs.remove(0)
}

async fn scrape(j: &Job, url: &str) -> Result<Response, FetchError> {
    let f = Fetcher::new(&j.http, Path::new("/")).unwrap();
    f.scrape(url, j, Duration::from_secs(5)).await
}

#[tokio::test]
async fn sends_prometheus_headers_credentials_and_extra_headers() {
    let srv = serve(Arc::new(|_: &str| ok(b"a 1\n"))).await;
    let j = job(
        "    basic_auth: {username: user, password: pass}\n    http_headers: {Accept: {values: [text/plain]}, X-Extra: {values: [one, two]}}\n",
    );
    let url = format!("http://{}/metrics", srv.addr);
    let r = scrape(&j, &url).await.unwrap();
    assert_eq!(r.body, "a 1\n");
    assert_eq!(r.content_type.as_deref(), Some("text/plain; version=0.0.4"));
    let seen = srv.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.header("authorization"), Some("Basic dXNlcjpwYXNz"), "{seen:?}");
    assert_eq!(seen.header("accept"), Some("text/plain"), "an extra header replaces Prometheus' own");
    let extra: Vec<_> =
        seen.headers.iter().filter(|(n, _)| n == "x-extra").map(|(_, v)| v.as_str()).collect();
    assert_eq!(extra, ["one", "two"]);
    assert_eq!(seen.header("accept-encoding"), Some("gzip"));
    assert_eq!(seen.header("x-prometheus-scrape-timeout-seconds"), Some("5"));
    assert!(seen.header("user-agent").unwrap().starts_with("ferry-agent/"));
    assert_eq!(seen.header("host"), Some(srv.addr.to_string().as_str()));
}

#[tokio::test]
async fn reuses_one_connection_across_scrapes() {
    let srv = serve(Arc::new(|_: &str| ok(b"a 1\n"))).await;
    let j = job("");
    let f = Fetcher::new(&j.http, Path::new("/")).unwrap();
    let url = format!("http://{}/metrics", srv.addr);
    for _ in 0..3 {
        f.scrape(&url, &j, Duration::from_secs(5)).await.unwrap();
    }
    assert_eq!(srv.seen.lock().unwrap().len(), 3);
    assert_eq!(srv.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_large_body_streams_through_a_capped_read_buffer() {
    // Varied lines, so a lost or repeated piece shows in the comparison.
    let body: String = (0..60_000).map(|i| format!("metric_{i} {i}\n")).collect();
    assert!(body.len() > 10 * MAX_READ_BUF);
    let served = body.clone().into_bytes();
    let srv = serve(Arc::new(move |_: &str| ok(&served))).await;
    let client = plain_http::PlainHttp::new(true);
    let url = format!("http://{}/metrics", srv.addr);
    for _ in 0..2 {
        let Outcome::Done(resp) = client.get(&url, &HeaderMap::new(), None).await.unwrap() else { panic!() };
        let mut incoming = resp.into_body();
        let (mut got, mut largest) = (Vec::new(), 0);
        while let Some(chunk) = plain_http::next_chunk(&mut incoming).await.unwrap() {
            largest = largest.max(chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert!(got == body.as_bytes(), "body arrives whole and in order");
        // Body pieces are slices of the connection's read buffer, so none outgrows what the
        // cap lets it hold (twice the cap, see MAX_READ_BUF; uncapped, pieces reach ~400 KB).
        assert!(largest <= 2 * MAX_READ_BUF, "a {largest}-byte piece");
    }
    assert_eq!(srv.connections.load(Ordering::SeqCst), 1, "the second GET reused the connection");
}

#[tokio::test]
async fn redirects_keep_credentials_only_within_the_origin() {
    let other = serve(Arc::new(|_: &str| ok(b"b 2\n"))).await;
    let elsewhere = format!("http://{}/final", other.addr);
    let srv = serve(Arc::new(move |p: &str| match p {
        "/metrics" => redirect("301 Moved Permanently", "/moved"),
        "/moved" => redirect("307 Temporary Redirect", &elsewhere),
        _ => ok(b"never"),
    }))
    .await;
    let j = job("    authorization: {credentials: secret}\n");
    let r = scrape(&j, &format!("http://{}/metrics", srv.addr)).await.unwrap();
    assert_eq!(r.body, "b 2\n");
    let seen = srv.seen.lock().unwrap().clone();
    assert_eq!(seen.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), ["/metrics", "/moved"]);
    assert!(seen.iter().all(|s| s.header("authorization") == Some("Bearer secret")), "{seen:?}");
    let last = other.seen.lock().unwrap()[0].clone();
    assert_eq!(last.path, "/final");
    assert_eq!(last.header("authorization"), None, "another port is another origin");
    assert_eq!(last.header("accept-encoding"), Some("gzip"), "the other headers follow");
}

#[tokio::test]
async fn redirects_stop_when_disabled_and_after_ten() {
    let srv = serve(Arc::new(|p: &str| {
        let n: usize = p.trim_start_matches("/hop/").parse().unwrap_or(0);
        redirect("302 Found", &format!("/hop/{}", n + 1))
    }))
    .await;
    let url = format!("http://{}/hop/0", srv.addr);
    let e = scrape(&job(""), &url).await.unwrap_err();
    assert_eq!(e.msg, format!("Get {url:?}: stopped after {MAX_REDIRECTS} redirects"));
    assert_eq!(srv.seen.lock().unwrap().len(), MAX_REDIRECTS + 1);
    srv.seen.lock().unwrap().clear();
    let e = scrape(&job("    follow_redirects: false\n"), &url).await.unwrap_err();
    assert_eq!(e.msg, "server returned HTTP status 302 Found");
    assert_eq!(srv.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_redirect_to_https_is_handed_on_without_credentials() {
    let srv = serve(Arc::new(|_: &str| redirect("302 Found", "https://127.0.0.1:1/secure"))).await;
    let client = plain_http::PlainHttp::new(true);
    let auth = HeaderValue::from_static("Bearer secret");
    let url = format!("http://{}/metrics", srv.addr);
    match client.get(&url, &HeaderMap::new(), Some(&auth)).await.unwrap() {
        plain_http::Outcome::Elsewhere(next) => assert_eq!(next.as_str(), "https://127.0.0.1:1/secure"),
        other => panic!("{other:?}"),
    }
    // Through the fetcher, reqwest takes it on and fails to connect, and says where.
    let e = scrape(&job("    authorization: {credentials: secret}\n"), &url).await.unwrap_err();
    assert!(e.msg.starts_with("Get \"https://127.0.0.1:1/secure\": "), "{}", e.msg);
}

#[tokio::test]
async fn a_refused_connection_says_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/metrics");
    let e = scrape(&job(""), &url).await.unwrap_err();
    assert!(e.msg.starts_with(&format!("Get {url:?}: ")), "{}", e.msg);
    assert!(e.msg.contains("Connection refused"), "{}", e.msg);
}
