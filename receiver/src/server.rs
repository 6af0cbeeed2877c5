//! Starting and stopping a receiver: used by the `ferry-receiver` binary and by
//! `ferry-agent`, which can host a receiver in-process for single-machine setups.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::app::{App, router};
use crate::auth::{Auth, RateLimiter};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::write::now_ms;

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: String,
    pub storage: PathBuf,
    pub config: Config,
    pub checkpoint_interval: Duration,
    pub cache_bytes: u64,
}

/// A receiver that is serving.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub done: tokio::task::JoinHandle<Result<(), String>>,
}

/// Opens the store, binds, and serves until `shutdown` completes; then finishes in-flight
/// requests and flushes the store.
pub async fn start(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Running, String> {
    let acceptor = match &opts.config.tls {
        Some(t) => Some(crate::tls::acceptor(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let auth = Auth::new(&opts.config)?;
    let store = Store::open(&opts.storage, opts.cache_bytes)
        .map_err(|e| format!("opening store {}: {e}", opts.storage.display()))?;
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", opts.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = Arc::new(App {
        store: Arc::new(store),
        config: opts.config,
        auth,
        limiter: RateLimiter::default(),
        metrics: Metrics::default(),
    });
    tracing::info!(%addr, storage = %opts.storage.display(), series = app.store.series_count(), "ferry-receiver listening");
    let maintenance = tokio::spawn(maintenance(app.clone(), opts.checkpoint_interval));
    let a = app.clone();
    let done = tokio::spawn(async move {
        let served = match acceptor {
            Some(acc) => {
                let l = crate::tls::TlsListener::new(listener, acc).map_err(|e| e.to_string())?;
                axum::serve(l, router(a.clone())).with_graceful_shutdown(shutdown).await
            }
            None => axum::serve(listener, router(a.clone())).with_graceful_shutdown(shutdown).await,
        };
        maintenance.abort();
        served.map_err(|e| format!("server: {e}"))?;
        a.store.sync().await.map_err(|e| format!("final flush: {e}"))?;
        tracing::info!("ferry-receiver stopped");
        Ok(())
    });
    Ok(Running { addr, app, done })
}

/// Checkpoints and retention, off the request path.
async fn maintenance(app: Arc<App>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let a = app.clone();
        let done = tokio::task::spawn_blocking(move || {
            let checkpointed = a.store.checkpoint()?;
            let deleted = a.store.delete_before(now_ms() - a.config.retention.0)?;
            Ok::<_, StoreError>((checkpointed, deleted))
        })
        .await;
        match done {
            Ok(Ok((c, d))) => {
                app.metrics.checkpointed_log_records.fetch_add(c as u64, Relaxed);
                app.metrics.retention_deleted.fetch_add(d as u64, Relaxed);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "maintenance failed; will retry next interval"),
            Err(e) => tracing::error!(error = %e, "maintenance task panicked"),
        }
    }
}
