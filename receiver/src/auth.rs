//! Who is asking: the tenant of a request (from credentials when `auth` is configured,
//! otherwise from `X-Scope-OrgID`), and each tenant's ingestion-rate token bucket.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use hashbrown::HashMap;
use std::sync::Mutex;

use crate::config::{Config, valid_tenant};

pub const TENANT_HEADER: &str = "X-Scope-OrgID";

/// Why a request has no tenant; maps to 401 or 400.
#[derive(Debug)]
pub struct Denied {
    pub status: StatusCode,
    pub msg: String,
}

enum Secret {
    Bearer(String),
    Basic { user: String, password: String },
}

/// Credentials resolved at start-up (token files read once).
pub struct Auth {
    creds: Vec<(Secret, String)>,
    default_tenant: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("credentials", &self.creds.len()).finish()
    }
}

/// Equality whose time does not depend on where the inputs first differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

impl Auth {
    pub fn new(cfg: &Config) -> Result<Auth, String> {
        let mut creds = Vec::new();
        for (i, c) in cfg.auth.iter().enumerate() {
            let secret = if let Some(t) = &c.bearer_token {
                Secret::Bearer(t.clone())
            } else if let Some(f) = &c.bearer_token_file {
                let t = std::fs::read_to_string(f)
                    .map_err(|e| format!("auth[{i}].bearer_token_file {}: {e}", f.display()))?;
                Secret::Bearer(t.trim().to_owned())
            } else if let Some(b) = &c.basic_auth {
                Secret::Basic { user: b.username.clone(), password: b.password.clone() }
            } else {
                return Err(format!("auth[{i}]: no credential"));
            };
            creds.push((secret, c.tenant.clone()));
        }
        Ok(Auth { creds, default_tenant: cfg.default_tenant.clone() })
    }

    /// The request's tenant. With credentials configured, only they decide: the header
    /// cannot move a pusher into another tenant.
    pub fn tenant(&self, headers: &HeaderMap) -> Result<String, Denied> {
        if self.creds.is_empty() {
            return match headers.get(TENANT_HEADER).map(|v| v.to_str().unwrap_or("").trim()) {
                None | Some("") => Ok(self.default_tenant.clone()),
                Some(t) if valid_tenant(t) => Ok(t.to_owned()),
                Some(t) => Err(Denied {
                    status: StatusCode::BAD_REQUEST,
                    msg: format!("invalid tenant {t:?} in {TENANT_HEADER}: use letters, digits and -_.!*'()"),
                }),
            };
        }
        let unauthorized = |msg: &str| Denied { status: StatusCode::UNAUTHORIZED, msg: msg.to_owned() };
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized("credentials required: send a bearer token or basic auth"))?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let found = if scheme.eq_ignore_ascii_case("bearer") {
            self.creds
                .iter()
                .find(|(s, _)| matches!(s, Secret::Bearer(t) if same(t.as_bytes(), rest.trim().as_bytes())))
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = decode_base64(rest.trim()).unwrap_or_default();
            self.creds.iter().find(|(s, _)| match s {
                Secret::Basic { user, password } => same(format!("{user}:{password}").as_bytes(), &decoded),
                Secret::Bearer(_) => false,
            })
        } else {
            None
        };
        found.map(|(_, t)| t.clone()).ok_or_else(|| unauthorized("invalid credentials"))
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Per-tenant token buckets for `ingestion_rate` / `ingestion_burst`.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimiter")
    }
}

impl RateLimiter {
    /// Takes `n` tokens, or says how long to wait before trying again. A request larger than
    /// the burst passes when the bucket is full (and leaves it in debt), so no request is
    /// refused forever.
    pub fn take(&self, tenant: &str, n: usize, rate: f64, burst: f64) -> Result<(), Duration> {
        if rate <= 0.0 || n == 0 {
            return Ok(());
        }
        let burst = if burst > 0.0 { burst } else { rate };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let b = buckets.entry_ref(tenant).or_insert_with(|| Bucket { tokens: burst, updated: now });
        b.tokens = (b.tokens + now.duration_since(b.updated).as_secs_f64() * rate).min(burst);
        b.updated = now;
        let need = (n as f64).min(burst);
        if b.tokens >= need {
            b.tokens -= n as f64;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((need - b.tokens) / rate).max(0.001)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket() {
        let l = RateLimiter::default();
        assert!(l.take("a", 100, 100.0, 100.0).is_ok());
        let wait = l.take("a", 50, 100.0, 100.0).unwrap_err();
        assert!(wait > Duration::from_millis(300) && wait <= Duration::from_millis(500), "{wait:?}");
        // Other tenants are unaffected; no rate means no limit.
        assert!(l.take("b", 100, 100.0, 100.0).is_ok());
        assert!(l.take("c", 1_000_000, 0.0, 0.0).is_ok());
    }

    #[test]
    fn base64() {
        assert_eq!(decode_base64("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        assert!(decode_base64("!!").is_none());
    }
}
