//! [`PlainHttp`]: the scrape path's client for `http://` targets reached directly (no proxy):
//! hyper-util's pooled HTTP/1.1 client with each connection's read buffer capped, and redirects
//! followed here, with reqwest's rules, since that client follows none.
//!
//! Why not reqwest for these: hyper grows a connection's read buffer to fit what it reads, up
//! to about 400 KiB, and keeps it while the connection idles in the pool until the next scrape.
//! An agent that scrapes a few hundred targets serving large uncompressed bodies held most of
//! its heap that way (docs/performance.md), and reqwest does not expose hyper's `max_buf_size`.
//! HTTPS and proxied targets still go through reqwest; so does a redirect to one.

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue, LOCATION};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::Url;

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
pub struct PlainHttp {
    client: Client<HttpConnector, Empty<Bytes>>,
    follow_redirects: bool,
}

/// Where a GET ended.
#[derive(Debug)]
pub enum Outcome {
    /// The final response (a redirect too, when redirects are not followed).
    Done(Response<Incoming>),
    /// A redirect to a URL this client does not fetch (`https://`): the caller goes on with
    /// the general client, without credentials, since the scheme and so the origin changed.
    Elsewhere(Url),
}

impl PlainHttp {
    pub fn new(follow_redirects: bool) -> PlainHttp {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .http1_max_buf_size(MAX_READ_BUF)
            // Like the reqwest client beside it: two idle connections per target, dropped after
            // 90 s idle (the timer is what enforces that).
            .pool_max_idle_per_host(2)
            .pool_timer(TokioTimer::new())
            .build(connector);
        PlainHttp { client, follow_redirects }
    }

    /// GETs `url` (which must be `http://`) with `headers`, plus `auth` as the Authorization
    /// header for as long as the origin stays the same.
    pub async fn get(
        &self,
        url: &str,
        headers: &HeaderMap,
        auth: Option<&HeaderValue>,
    ) -> Result<Outcome, String> {
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
                return Ok(Outcome::Done(resp));
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
            if next.scheme() != "http" {
                return Ok(Outcome::Elsewhere(next));
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
