//! The scrape fetch against a hand-written HTTP/1.1 server on loopback (plain or TLS, with
//! certificates from the openssl command), which records every request and connection:
//! headers and credentials, redirects and their rules, connection reuse, the capped read
//! buffer, and certificate verification.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use super::*;
use crate::config::Config;
use crate::scrape::direct_http::{self, DirectHttp, MAX_READ_BUF, MAX_REDIRECTS};

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
    serve_on(route, None).await
}

/// The same over TLS when `tls` is given.
async fn serve_on(route: Arc<Route>, tls: Option<TlsAcceptor>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (s, c) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            c.fetch_add(1, Ordering::SeqCst);
            let (s, route, tls) = (s.clone(), route.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => converse(sock, s, route).await,
                    Some(acceptor) => {
                        // A client that refuses the certificate ends the handshake: no request.
                        if let Ok(stream) = acceptor.accept(sock).await {
                            converse(stream, s, route).await
                        }
                    }
                }
            });
        }
    });
    Server { addr, seen, connections }
}

async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    seen: Arc<Mutex<Vec<Seen>>>,
    route: Arc<Route>,
) {
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
        seen.lock().unwrap().push(Seen { path: path.clone(), headers });
        if sock.write_all(&route(&path)).await.is_err() || sock.flush().await.is_err() {
            return;
        }
    }
}

/// A test CA and a server certificate it signed for `san` (openssl's syntax, `IP:127.0.0.1`
/// say), in a folder of their own that goes with the value. (webpki refuses a self-signed
/// CA certificate as the server's own, so the two are separate.)
struct Cert {
    dir: std::path::PathBuf,
}

impl Cert {
    fn new(tag: &str, san: &str) -> Cert {
        let dir = std::env::temp_dir().join(format!("ferry-fetch-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ext.cnf"), format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"))
            .unwrap();
        let steps: [&[&str]; 3] = [
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ferry-test-ca"]
                .iter()
                .chain(&["-keyout", "ca.key", "-out", "ca.pem"])
                .copied()
                .collect::<Vec<_>>(),
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=ferry-test",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
            ]
            .iter()
            .chain(&["-extfile", "ext.cnf", "-out", "cert.pem"])
            .copied()
            .collect::<Vec<_>>(),
        ];
        for args in steps {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("the openssl command (.ci/run installs it)");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Cert { dir }
    }

    /// The CA certificate, for `ca_file`.
    fn pem(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }

    fn acceptor(&self) -> TlsAcceptor {
        self.acceptor_for(rustls::DEFAULT_VERSIONS)
    }

    /// An acceptor that speaks only `versions`.
    fn acceptor_for(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsAcceptor {
        let leaf = self.dir.join("cert.pem");
        let chain = CertificateDer::pem_file_iter(leaf).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(self.dir.join("key.pem")).unwrap();
        let cfg =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        TlsAcceptor::from(Arc::new(cfg))
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
    let tls = crate::scrape::tls::client_config(None, Path::new("/")).unwrap();
    let client = DirectHttp::new(true, tls, None);
    let url = format!("http://{}/metrics", srv.addr);
    for _ in 0..2 {
        let resp = client.get(&url, &HeaderMap::new(), None).await.unwrap();
        let mut incoming = resp.into_body();
        let (mut got, mut largest) = (Vec::new(), 0);
        while let Some(chunk) = direct_http::next_chunk(&mut incoming).await.unwrap() {
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
async fn a_redirect_to_https_keeps_the_headers_but_not_the_credentials() {
    let cert = Cert::new("redirect", "IP:127.0.0.1");
    let secure = serve_on(Arc::new(|_: &str| ok(b"s 1\n")), Some(cert.acceptor())).await;
    let to = format!("https://{}/secure", secure.addr);
    let srv = serve(Arc::new(move |_: &str| redirect("302 Found", &to))).await;
    let ca = cert.pem().display().to_string();
    let j = job(&format!("    authorization: {{credentials: secret}}\n    tls_config: {{ca_file: {ca}}}\n"));
    let r = scrape(&j, &format!("http://{}/metrics", srv.addr)).await.unwrap();
    assert_eq!(r.body, "s 1\n");
    assert_eq!(srv.seen.lock().unwrap()[0].header("authorization"), Some("Bearer secret"));
    let last = secure.seen.lock().unwrap()[0].clone();
    assert_eq!(last.header("authorization"), None, "another scheme is another origin");
    assert_eq!(last.header("accept-encoding"), Some("gzip"));
}

#[tokio::test]
async fn https_targets_are_verified_against_the_configured_ca_unless_told_not_to() {
    let cert = Cert::new("verify", "IP:127.0.0.1");
    let srv = serve_on(Arc::new(|_: &str| ok(b"t 1\n")), Some(cert.acceptor())).await;
    let url = format!("https://{}/metrics", srv.addr);
    let ca = cert.pem().display().to_string();
    let with_ca = job(&format!("    tls_config: {{ca_file: {ca}}}\n"));
    let f = Fetcher::new(&with_ca.http, Path::new("/")).unwrap();
    for _ in 0..2 {
        assert_eq!(f.scrape(&url, &with_ca, Duration::from_secs(5)).await.unwrap().body, "t 1\n");
    }
    assert_eq!(srv.connections.load(Ordering::SeqCst), 1, "TLS connections are kept alive too");
    let e = scrape(&job(""), &url).await.unwrap_err();
    assert!(e.msg.contains("UnknownIssuer"), "a self-signed certificate is refused by default: {}", e.msg);
    let insecure = job("    tls_config: {insecure_skip_verify: true}\n");
    assert_eq!(scrape(&insecure, &url).await.unwrap().body, "t 1\n");
    let e = Fetcher::new(&job("    tls_config: {ca: not a certificate}\n").http, Path::new("/")).unwrap_err();
    assert!(e.contains("tls_config.ca"), "{e}");
}

#[tokio::test]
async fn server_name_is_the_name_sent_and_verified() {
    let cert = Cert::new("sni", "DNS:metrics.example");
    let srv = serve_on(Arc::new(|_: &str| ok(b"n 1\n")), Some(cert.acceptor())).await;
    let url = format!("https://{}/metrics", srv.addr);
    let ca = cert.pem().display().to_string();
    let e = scrape(&job(&format!("    tls_config: {{ca_file: {ca}}}\n")), &url).await.unwrap_err();
    assert!(e.msg.contains("not valid for name"), "the certificate is not for 127.0.0.1: {}", e.msg);
    let named = job(&format!("    tls_config: {{ca_file: {ca}, server_name: metrics.example}}\n"));
    assert_eq!(scrape(&named, &url).await.unwrap().body, "n 1\n");
}

#[tokio::test]
async fn tls_versions_are_honoured() {
    let cert = Cert::new("versions", "IP:127.0.0.1");
    let ca = cert.pem().display().to_string();
    let with = |extra: &str| job(&format!("    tls_config: {{ca_file: {ca}{extra}}}\n"));
    for (server, refused, accepted) in [
        (&rustls::version::TLS13, ", max_version: TLS12", ", min_version: TLS10"),
        (&rustls::version::TLS12, ", min_version: TLS13", ", max_version: TLS12"),
    ] {
        let srv = serve_on(Arc::new(|_: &str| ok(b"v 1\n")), Some(cert.acceptor_for(&[server]))).await;
        let url = format!("https://{}/metrics", srv.addr);
        let e = scrape(&with(refused), &url).await.unwrap_err();
        assert!(e.msg.contains("Get "), "{refused}: {}", e.msg);
        assert_eq!(scrape(&with(accepted), &url).await.unwrap().body, "v 1\n", "{accepted}");
        assert_eq!(scrape(&with(""), &url).await.unwrap().body, "v 1\n");
    }
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
