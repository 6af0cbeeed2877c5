//! [`DirectHttp`]: the scrape path's client for targets reached directly (no proxy), over
//! HTTP or HTTPS: hyper-util's pooled HTTP/1.1 client with each connection's read buffer
//! capped, TLS from [`tls`](super::tls) (with `server_name` applied here), and redirects
//! followed here, with reqwest's rules, since that client follows none.
//!
//! Why not reqwest for these: hyper grows a connection's read buffer to fit what it reads, up
//! to about 400 KiB, and keeps it while the connection idles in the pool until the next scrape.
//! An agent that scrapes a few hundred targets serving large uncompressed bodies held most of
//! its heap that way (docs/performance.md), and reqwest does not expose hyper's `max_buf_size`.
//! Proxied targets still go through reqwest.

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue, LOCATION};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::Url;
use rustls_pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;

use super::fetch::error_chain;

/// The cap hyper's read strategy grows toward: it reserves at most this much free space for
/// one read. The buffer underneath may round a reservation up to twice that, so an idle
/// connection keeps at most about 32 KiB, where an uncapped one kept up to about 400 KiB.
/// A larger body streams through in pieces, a few more reads per scrape and no extra copies.
/// At 200 targets of 500 KB bodies, capping at 64 KiB saved a third of the agent's memory
/// and 16 KiB another 9 MiB, neither at a measurable CPU cost (docs/performance.md).
pub const MAX_READ_BUF: usize = 16 << 10;

/// As many redirects as reqwest's policy allowed (and Go's client, which Prometheus uses).
pub const MAX_REDIRECTS: usize = 10;

#[derive(Debug, Clone)]
pub struct DirectHttp {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    follow_redirects: bool,
}

/// Whether this client fetches `url` (by its scheme).
pub fn handles(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

impl DirectHttp {
    /// `server_name`, when given, is the name every TLS connection sends and verifies,
    /// whatever host the URL names (`tls_config.server_name`).
    pub fn new(
        follow_redirects: bool,
        tls: ClientConfig,
        server_name: Option<ServerName<'static>>,
    ) -> DirectHttp {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        let https = match server_name {
            Some(name) => https.with_server_name_resolver(FixedServerNameResolver::new(name)),
            None => https,
        };
        let connector = https.enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .http1_max_buf_size(MAX_READ_BUF)
            // Like the reqwest client beside it: two idle connections per target, dropped after
            // 90 s idle (the timer is what enforces that).
            .pool_max_idle_per_host(2)
            .pool_timer(TokioTimer::new())
            .build(connector);
        DirectHttp { client, follow_redirects }
    }

    /// GETs `url` (`http://` or `https://`) with `headers`, plus `auth` as the Authorization
    /// header for as long as the origin stays the same. The final response may be a
    /// redirect, when redirects are not followed.
    pub async fn get(
        &self,
        url: &str,
        headers: &HeaderMap,
        auth: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, String> {
        let mut current = Url::parse(url).map_err(|e| format!("parsing URL: {e}"))?;
        let mut auth = auth;
        for hop in 0..=MAX_REDIRECTS {
            let uri: Uri = current.as_str().parse().map_err(|e| format!("parsing URL: {e}"))?;
            let mut req = Request::get(uri).body(Empty::new()).map_err(|e| e.to_string())?;
            *req.headers_mut() = headers.clone();
            if let Some(a) = auth {
                req.headers_mut().insert(AUTHORIZATION, a.clone());
            }
            let resp = self.client.request(req).await.map_err(|e| error_chain(&e))?;
            let location = resp.headers().get(LOCATION);
            let Some(location) = location.filter(|_| self.follow_redirects && is_redirect(resp.status()))
            else {
                return Ok(resp);
            };
            if hop == MAX_REDIRECTS {
                return Err(format!("stopped after {MAX_REDIRECTS} redirects"));
            }
            let next = location
                .to_str()
                .ok()
                .and_then(|l| current.join(l).ok())
                .ok_or_else(|| format!("redirect to an invalid Location {location:?}"))?;
            // reqwest's rule: credentials go only where the scheme, host and port are the same.
            let same_origin = next.scheme() == current.scheme()
                && next.host_str() == current.host_str()
                && next.port_or_known_default() == current.port_or_known_default();
            if !same_origin {
                auth = None;
            }
            if !handles(next.as_str()) {
                return Err(format!("redirect to {:?}: only http and https are followed", next.as_str()));
            }
            current = next;
        }
        unreachable!("the loop returns at hop MAX_REDIRECTS")
    }
}

fn is_redirect(s: StatusCode) -> bool {
    matches!(s.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The next piece of a hyper body's data, skipping trailers.
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, String> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(error_chain(&e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}
