//! HTTP fetching of a target: the client built from `<http_config>` (auth, TLS, proxy,
//! redirects, extra headers; scrapes without a proxy go through [`DirectHttp`], the rest
//! through reqwest), Prometheus' request headers, one deadline for the whole
//! exchange, only HTTP 200 as success, gzip decoded only for `Content-Encoding: gzip`, and
//! `body_size_limit` applied to the decoded bytes (`n >= limit` fails).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName,
    HeaderValue, USER_AGENT as USER_AGENT_HEADER,
};

use super::direct_http::{self, DirectHttp};

use crate::config::{HttpClient, Job};

pub const USER_AGENT: &str = concat!("ferry-agent/", env!("CARGO_PKG_VERSION"));

/// A response that made it to the parser's door.
#[derive(Debug)]
pub struct Response {
    pub body: String,
    pub content_type: Option<String>,
    pub decoded_len: usize,
}

#[derive(Debug)]
pub struct FetchError {
    pub msg: String,
    pub body_size_limit_hit: bool,
}

impl FetchError {
    fn new(msg: impl Into<String>) -> FetchError {
        FetchError { msg: msg.into(), body_size_limit_hit: false }
    }
}

/// How to authenticate; secrets from files are re-read on every request, so rotated
/// credentials (service-account tokens) are picked up.
#[derive(Debug, Clone)]
enum Auth {
    None,
    Basic { user: Secret, password: Secret },
    Bearer { scheme: String, token: Secret },
}

#[derive(Debug, Clone)]
enum Secret {
    Inline(String),
    File(std::path::PathBuf),
}

impl Secret {
    fn read(&self) -> Result<String, String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("reading {}: {e}", p.display())),
        }
    }
}

/// A client for one job's (or SD's) `<http_config>`.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    /// The scrape path's client, when no proxy is configured.
    direct: Option<DirectHttp>,
    auth: Auth,
    headers: HeaderMap,
}

/// `p`, relative to `base` (the config's folder) unless absolute.
pub(super) fn resolve(base: &Path, p: &Path) -> std::path::PathBuf {
    if p.is_absolute() { p.to_owned() } else { base.join(p) }
}

impl Fetcher {
    /// Builds the client; relative file paths resolve against `base` (the config's folder).
    pub fn new(http: &HttpClient, base: &Path) -> Result<Fetcher, String> {
        // No retries inside reqwest: the queue and the scrape loop decide what is tried again.
        // Its default policy (retrying HTTP/2 and HTTP/3 refusals, which these HTTP/1
        // connections never see) still copied every request beforehand, in case: the header
        // map, and the body, which that copy turns from a `Vec` into a shared buffer with an
        // allocation of its own (1.3% of the agent's CPU samples in a 500k-series profile).
        // `never()` alone would not stop the copy: reqwest copies before it classifies, unless
        // the request's retry count is used up, which a limit of 0 makes it from the start.
        let mut b = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .pool_max_idle_per_host(2)
            .tcp_nodelay(true)
            .retry(reqwest::retry::never().max_retries_per_request(0));
        b = if http.follow_redirects.unwrap_or(true) {
            b.redirect(reqwest::redirect::Policy::limited(10))
        } else {
            b.redirect(reqwest::redirect::Policy::none())
        };
        if !http.proxy_from_environment {
            b = b.no_proxy();
        }
        if let Some(p) = &http.proxy_url {
            let mut proxy = reqwest::Proxy::all(p).map_err(|e| format!("proxy_url {p:?}: {e}"))?;
            if let Some(np) = &http.no_proxy {
                proxy = proxy.no_proxy(reqwest::NoProxy::from_string(np));
            }
            b = b.proxy(proxy);
        }
        // One TLS configuration for both clients, so both honour the same settings.
        let tls = super::tls::client_config(http.tls_config.as_ref(), base)?;
        b = b.use_preconfigured_tls(tls.clone());
        let auth = if let Some(ba) = &http.basic_auth {
            let user = match (&ba.username, &ba.username_file) {
                (_, Some(f)) => Secret::File(resolve(base, f)),
                (u, _) => Secret::Inline(u.clone().unwrap_or_default()),
            };
            let password = match (&ba.password, &ba.password_file) {
                (_, Some(f)) => Secret::File(resolve(base, f)),
                (p, _) => Secret::Inline(p.clone().unwrap_or_default()),
            };
            Auth::Basic { user, password }
        } else if let Some(a) = &http.authorization {
            let token = match (&a.credentials, &a.credentials_file) {
                (_, Some(f)) => Secret::File(resolve(base, f)),
                (c, _) => Secret::Inline(c.clone().unwrap_or_default()),
            };
            Auth::Bearer { scheme: a.kind.clone().unwrap_or_else(|| "Bearer".into()), token }
        } else if let Some(t) = &http.bearer_token {
            Auth::Bearer { scheme: "Bearer".into(), token: Secret::Inline(t.clone()) }
        } else if let Some(f) = &http.bearer_token_file {
            Auth::Bearer { scheme: "Bearer".into(), token: Secret::File(resolve(base, f)) }
        } else {
            Auth::None
        };
        let mut headers = HeaderMap::new();
        for (name, v) in &http.http_headers {
            let hn =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("http_headers {name:?}: {e}"))?;
            let mut values: Vec<String> = v.values.iter().chain(v.secrets.iter()).cloned().collect();
            for f in &v.files {
                values.push(
                    std::fs::read_to_string(resolve(base, f))
                        .map_err(|e| format!("http_headers {name:?}: {e}"))?
                        .trim()
                        .to_owned(),
                );
            }
            for val in values {
                headers.append(
                    hn.clone(),
                    HeaderValue::from_str(&val).map_err(|e| format!("http_headers {name:?}: {e}"))?,
                );
            }
        }
        let client = b.build().map_err(|e| format!("building HTTP client: {e}"))?;
        // reqwest cannot send another name than the URL's; the config check refuses
        // `server_name` where only reqwest connects (proxies, remote write, HTTP SD).
        let server_name = super::tls::server_name(http.tls_config.as_ref())?;
        let direct = http.proxy_url.is_none() && !http.proxy_from_environment;
        let direct = direct.then(|| DirectHttp::new(http.follow_redirects.unwrap_or(true), tls, server_name));
        Ok(Fetcher { client, direct, auth, headers })
    }

    /// The Authorization header the credentials make, read afresh (files may rotate).
    fn auth_header(&self) -> Result<Option<HeaderValue>, String> {
        let text = match &self.auth {
            Auth::None => return Ok(None),
            Auth::Basic { user, password } => {
                use base64::Engine as _;
                let pair = format!("{}:{}", user.read()?, password.read()?);
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
            }
            Auth::Bearer { scheme, token } => format!("{scheme} {}", token.read()?),
        };
        let mut v = HeaderValue::from_str(&text).map_err(|_| "credentials are not a valid header value")?;
        v.set_sensitive(true);
        Ok(Some(v))
    }

    /// Applies credentials and extra headers to a request.
    pub fn prepare(&self, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, String> {
        let req = req.headers(self.headers.clone());
        Ok(match self.auth_header()? {
            Some(v) => req.header(AUTHORIZATION, v),
            None => req,
        })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Scrapes `url` for `job` within `timeout`.
    pub async fn scrape(&self, url: &str, job: &Job, timeout: Duration) -> Result<Response, FetchError> {
        match tokio::time::timeout(timeout, self.scrape_inner(url, job, timeout)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::new(format!(
                "Get {url:?}: context deadline exceeded (scrape_timeout {})",
                crate::duration::format(timeout)
            ))),
        }
    }

    /// Prometheus' scrape request headers, then the configured extra ones, which replace
    /// any of the same name (as reqwest's `headers` does on the other path).
    fn scrape_headers(&self, job: &Job, timeout: Duration) -> Result<HeaderMap, String> {
        let mut h = HeaderMap::with_capacity(4 + self.headers.len());
        h.insert(USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT));
        h.insert(ACCEPT, HeaderValue::from_str(&job.accept).map_err(|_| "Accept header is not valid")?);
        h.insert(
            ACCEPT_ENCODING,
            HeaderValue::from_static(if job.enable_compression { "gzip" } else { "identity" }),
        );
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            HeaderValue::from_str(&crate::duration::seconds_string(timeout)).map_err(|e| e.to_string())?,
        );
        for name in self.headers.keys() {
            h.remove(name);
        }
        for (name, v) in &self.headers {
            h.append(name.clone(), v.clone());
        }
        Ok(h)
    }

    /// Sends the GET through reqwest (scrapes through a proxy).
    async fn send_general(
        &self,
        url: &str,
        headers: HeaderMap,
        auth: Option<HeaderValue>,
    ) -> Result<reqwest::Response, FetchError> {
        let mut req = self.client.get(url).headers(headers);
        if let Some(v) = auth {
            req = req.header(AUTHORIZATION, v);
        }
        req.send().await.map_err(|e| FetchError::new(format!("Get {url:?}: {}", error_chain(&e))))
    }

    async fn scrape_inner(&self, url: &str, job: &Job, timeout: Duration) -> Result<Response, FetchError> {
        let headers = self.scrape_headers(job, timeout).map_err(FetchError::new)?;
        let auth = self.auth_header().map_err(FetchError::new)?;
        let mut reply = match &self.direct {
            Some(direct) if direct_http::handles(url) => Reply::from_hyper(
                direct
                    .get(url, &headers, auth.as_ref())
                    .await
                    .map_err(|e| FetchError::new(format!("Get {url:?}: {e}")))?,
            ),
            _ => Reply::from_reqwest(self.send_general(url, headers, auth).await?),
        };
        if reply.status != StatusCode::OK {
            let s = reply.status;
            return Err(FetchError::new(format!(
                "server returned HTTP status {} {}",
                s.as_u16(),
                s.canonical_reason().unwrap_or("")
            )));
        }
        let limit = job.body_size_limit;
        let too_big = || FetchError { msg: "body size limit exceeded".into(), body_size_limit_hit: true };
        // The wire length, when known, sizes the buffer (a gzip body decodes to more). It is
        // the target's word, so it is capped: a wrong one costs a regrowth, not a huge block.
        let cap = if limit > 0 { limit.min(16 << 20) } else { 16 << 20 };
        let expected = reply.content_length.unwrap_or(0).min(cap) as usize;
        let mut body: Vec<u8> = Vec::with_capacity(if reply.gzip { 0 } else { expected });
        let mut gz = reply.gzip.then(|| flate2::write::GzDecoder::new(Vec::new()));
        while let Some(chunk) =
            reply.body.chunk().await.map_err(|e| FetchError::new(format!("reading body: {e}")))?
        {
            match &mut gz {
                Some(d) => {
                    d.write_all(&chunk)
                        .map_err(|e| FetchError::new(format!("decompressing gzip body: {e}")))?;
                    if limit > 0 && d.get_ref().len() as u64 >= limit {
                        return Err(too_big());
                    }
                }
                None => {
                    body.extend_from_slice(&chunk);
                    if limit > 0 && body.len() as u64 >= limit {
                        return Err(too_big());
                    }
                }
            }
        }
        if let Some(d) = gz {
            body = d.finish().map_err(|e| FetchError::new(format!("decompressing gzip body: {e}")))?;
            if limit > 0 && body.len() as u64 >= limit {
                return Err(too_big());
            }
        }
        let decoded_len = body.len();
        let body = super::parse::body_text(body).map_err(FetchError::new)?;
        Ok(Response { body, content_type: reply.content_type, decoded_len })
    }
}

/// A response's head as the scrape needs it, and its body still to read, from either client.
struct Reply {
    status: StatusCode,
    content_type: Option<String>,
    gzip: bool,
    content_length: Option<u64>,
    body: Body,
}

enum Body {
    Direct(hyper::body::Incoming),
    General(reqwest::Response),
}

impl Reply {
    fn new(status: StatusCode, headers: &HeaderMap, content_length: Option<u64>, body: Body) -> Reply {
        Reply {
            status,
            content_type: headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned),
            gzip: headers.get(CONTENT_ENCODING).is_some_and(|v| v.as_bytes() == b"gzip"),
            content_length,
            body,
        }
    }

    fn from_hyper(resp: http::Response<hyper::body::Incoming>) -> Reply {
        use hyper::body::Body as _;
        let (parts, body) = resp.into_parts();
        let len = body.size_hint().exact();
        Reply::new(parts.status, &parts.headers, len, Body::Direct(body))
    }

    fn from_reqwest(mut resp: reqwest::Response) -> Reply {
        let headers = std::mem::take(resp.headers_mut());
        Reply::new(resp.status(), &headers, resp.content_length(), Body::General(resp))
    }
}

impl Body {
    async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, String> {
        match self {
            Body::Direct(b) => direct_http::next_chunk(b).await,
            Body::General(r) => r.chunk().await.map_err(|e| error_chain(&e)),
        }
    }
}

/// An error with its causes, which is where reqwest keeps the useful part.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        // Some errors (kube's among them) already print their source; say it once.
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
