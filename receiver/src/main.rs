//! `ferry-receiver` command line: flags, start-up, background maintenance, signals.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use clap::Parser;
use ferry_receiver::app::{App, router};
use ferry_receiver::auth::{Auth, RateLimiter};
use ferry_receiver::config::Config;
use ferry_receiver::metrics::Metrics;
use ferry_receiver::selector::parse_duration;
use ferry_receiver::store::Store;
use ferry_receiver::write::now_ms;

/// Remote-Write 1.0/2.0 storage receiver on an embedded sled store, with a Prometheus-shaped
/// read API. Every write is on disk before it is answered 2xx.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on for HTTP (h2c too).
    #[arg(long = "web.listen-address", default_value = "0.0.0.0:9201")]
    listen: String,
    /// Directory of the sled store; created if missing.
    #[arg(long = "storage.path", default_value = "data")]
    storage: PathBuf,
    /// YAML configuration: retention, tenants, auth, limits. Optional.
    #[arg(long = "config.file")]
    config: Option<PathBuf>,
    /// How often open chunks are written out and the write log truncated (also bounds how
    /// much log a restart replays).
    #[arg(long = "storage.checkpoint-interval", default_value = "1m", value_parser = duration)]
    checkpoint_interval: Duration,
    /// Memory for sled's page cache, in MiB.
    #[arg(long = "storage.cache-mib", default_value_t = 128)]
    cache_mib: u64,
    /// Log level: error, warn, info, debug.
    #[arg(long = "log.level", default_value = "info")]
    log_level: String,
}

fn duration(s: &str) -> Result<Duration, String> {
    let ms = parse_duration(s).map_err(|e| e.0)?;
    if ms <= 0 {
        return Err("must be positive".into());
    }
    Ok(Duration::from_millis(ms as u64))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ferry-receiver: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let config = match &args.config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if config.tls.is_some() {
        return Err(
            "tls: serving TLS is not supported by this build yet; terminate TLS in front of the receiver"
                .into(),
        );
    }
    let auth = Auth::new(&config)?;
    let store = Store::open(&args.storage, args.cache_mib << 20)
        .map_err(|e| format!("opening store {}: {e}", args.storage.display()))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = Arc::new(App {
        store: Arc::new(store),
        config,
        auth,
        limiter: RateLimiter::default(),
        metrics: Metrics::default(),
    });
    tracing::info!(%addr, storage = %args.storage.display(), series = app.store.series_count(), "ferry-receiver listening");
    tokio::spawn(maintenance(app.clone(), args.checkpoint_interval));

    axum::serve(listener, router(app.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server: {e}"))?;
    app.store.sync().await.map_err(|e| format!("final flush: {e}"))?;
    tracing::info!("ferry-receiver stopped");
    Ok(())
}

/// Checkpoints and retention, off the request path.
async fn maintenance(app: Arc<App>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let a = app.clone();
        let done = tokio::task::spawn_blocking(move || {
            let compacted = a.store.checkpoint()?;
            let deleted = a.store.delete_before(now_ms() - a.config.retention.0)?;
            Ok::<_, ferry_receiver::store::StoreError>((compacted, deleted))
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

async fn shutdown_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
