//! The API-server client of a `kubernetes_sd_config`: in-cluster (service-account token,
//! re-read by kube as it rotates; never a fallback to `~/.kube/config`), `kubeconfig_file`
//! (its current context), or `api_server` with the inline HTTP client options. Also names
//! the client's identity so that jobs with the same cluster and credentials share watches.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::HeaderValue;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::config::KubernetesSdConfig;

/// Where in-cluster credentials and the own namespace live.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A client and its identity (for sharing watches).
pub async fn build(cfg: &KubernetesSdConfig, base: &Path) -> Result<(Client, String), String> {
    let (config, identity) = if let Some(path) = &cfg.kubeconfig_file {
        let path = base.join(path);
        let kc =
            Kubeconfig::read_from(&path).map_err(|e| format!("kubeconfig_file {}: {e}", path.display()))?;
        let c = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("kubeconfig_file {}: {e}", path.display()))?;
        (c, format!("kubeconfig:{}", path.display()))
    } else if let Some(url) = &cfg.api_server {
        let (config, token_file) = api_server(cfg, url, base)?;
        let identity = format!("api_server:{url}:{:?}", cfg.http_client());
        let builder = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| format!("building the Kubernetes client: {e}"))?;
        let client = match token_file {
            Some(path) => builder.with_layer(&TokenFile::new(path)).build(),
            None => builder.build(),
        };
        return Ok((client, identity));
    } else {
        let c = Config::incluster().map_err(|e| {
            format!("in-cluster configuration: {e} (outside a cluster, set api_server or kubeconfig_file)")
        })?;
        (c, "in-cluster".to_owned())
    };
    let client = Client::try_from(config).map_err(|e| format!("building the Kubernetes client: {e}"))?;
    Ok((client, identity))
}

fn read(base: &Path, p: &Path, what: &str) -> Result<String, String> {
    let p = base.join(p);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("{what} {}: {e}", p.display()))
}

/// `api_server` plus the HTTP client options kube can express, and the credentials file
/// to send as a bearer token, if any.
fn api_server(cfg: &KubernetesSdConfig, url: &str, base: &Path) -> Result<(Config, Option<PathBuf>), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("api_server {url:?}: {e}"))?;
    let mut c = Config::new(uri);
    let http = cfg.http_client();
    if let Some(b) = &http.basic_auth {
        let user = match (&b.username, &b.username_file) {
            (Some(u), _) => u.clone(),
            (None, Some(f)) => read(base, f, "basic_auth.username_file")?,
            _ => String::new(),
        };
        let pass = match (&b.password, &b.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => read(base, f, "basic_auth.password_file")?,
            _ => String::new(),
        };
        c.auth_info.username = Some(user);
        c.auth_info.password = Some(pass.into());
    }
    let token_file = http
        .authorization
        .as_ref()
        .and_then(|a| a.credentials_file.clone())
        .or_else(|| http.bearer_token_file.clone());
    let token_file = token_file.map(|f| base.join(f));
    if token_file.is_none()
        && let Some(t) = http.authorization.as_ref().and_then(|a| a.credentials.clone()).or(http.bearer_token)
    {
        c.auth_info.token = Some(t.into());
    }
    if let Some(tls) = &http.tls_config {
        c.accept_invalid_certs = tls.insecure_skip_verify;
        c.tls_server_name = tls.server_name.clone();
        if let Some(f) = &tls.ca_file {
            c.root_cert_file = Some(base.join(f));
        } else if let Some(pem) = &tls.ca {
            use rustls_pki_types::pem::PemObject;
            let certs: Result<Vec<Vec<u8>>, _> =
                rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
                    .map(|c| c.map(|c| c.to_vec()))
                    .collect();
            c.root_cert = Some(certs.map_err(|e| format!("tls_config.ca: {e}"))?);
        }
        if let Some(f) = &tls.cert_file {
            c.auth_info.client_certificate = Some(base.join(f).display().to_string());
        } else if let Some(pem) = &tls.cert {
            c.auth_info.client_certificate_data = Some(base64(pem.as_bytes()));
        }
        if let Some(f) = &tls.key_file {
            c.auth_info.client_key = Some(base.join(f).display().to_string());
        } else if let Some(pem) = &tls.key {
            c.auth_info.client_key_data = Some(base64(pem.as_bytes()).into());
        }
    }
    if let Some(p) = &http.proxy_url {
        c.proxy_url = Some(p.parse().map_err(|e| format!("proxy_url {p:?}: {e}"))?);
    }
    for (name, values) in &http.http_headers {
        let mut all: Vec<String> = values.values.iter().chain(&values.secrets).cloned().collect();
        for f in &values.files {
            all.push(read(base, f, "http_headers file")?);
        }
        for v in all {
            let n = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("http_headers {name}: {e}"))?;
            let v = http::HeaderValue::from_str(&v).map_err(|e| format!("http_headers {name}: {e}"))?;
            c.headers.push((n, v));
        }
    }
    Ok((c, token_file))
}

/// Sets `Authorization: Bearer <file content>` on every request, re-reading the file when its
/// modification time changes (rotated credentials) and trimming it as Prometheus does.
#[derive(Debug, Clone)]
struct TokenFile {
    path: PathBuf,
    cache: Arc<Mutex<Option<(SystemTime, HeaderValue)>>>,
}

impl TokenFile {
    fn new(path: PathBuf) -> TokenFile {
        TokenFile { path, cache: Default::default() }
    }

    fn header(&self) -> Option<HeaderValue> {
        let mtime = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok()?;
        let mut cache = self.cache.lock().expect("token cache lock");
        if let Some((t, v)) = &*cache
            && *t == mtime
        {
            return Some(v.clone());
        }
        let read = std::fs::read_to_string(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {}", t.trim())).map_err(|e| e.to_string()));
        match read {
            Ok(v) => {
                *cache = Some((mtime, v.clone()));
                Some(v)
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "kubernetes_sd: cannot use the credentials file");
                None
            }
        }
    }
}

impl<S> tower::Layer<S> for TokenFile {
    type Service = WithToken<S>;
    fn layer(&self, inner: S) -> WithToken<S> {
        WithToken { inner, token: self.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct WithToken<S> {
    inner: S,
    token: TokenFile,
}

impl<S, B> tower::Service<http::Request<B>> for WithToken<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> S::Future {
        if let Some(v) = self.token.header() {
            req.headers_mut().insert(http::header::AUTHORIZATION, v);
        }
        self.inner.call(req)
    }
}

/// Standard base64 (kubeconfig `*-data` fields carry PEM in base64).
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `own_namespace`: the namespace this pod runs in.
pub fn own_namespace() -> Result<String, String> {
    let p = Path::new(SERVICE_ACCOUNT_DIR).join("namespace");
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("own_namespace: {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads() {
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
