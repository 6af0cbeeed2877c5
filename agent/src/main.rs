//! `ferry-agent` command line: flags, wiring, reload and signals; nothing else.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use clap::Parser;
use ferry_agent::config::{Config, fnv1a};
use ferry_agent::scrape::batch::ScrapeBatch;
use ferry_agent::scrape::manager::{Manager, Update};
use ferry_agent::telemetry::{Metrics, Shared, router};
use ferry_agent::{discovery, dump};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

/// Scrapes Prometheus targets and forwards what it scrapes, without loss.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (Prometheus-compatible YAML).
    #[arg(long = "config.file", default_value = "ferry-agent.yaml")]
    config: PathBuf,
    /// Check the configuration, print the result and exit (0 when valid).
    #[arg(long = "config.check")]
    check: bool,
    /// Do not expand ${VAR} and ${VAR:-default} in the configuration.
    #[arg(long = "no-config.expand-env")]
    no_expand_env: bool,
    /// Directory for the write-ahead log and queue cursors.
    #[arg(long = "storage.path", default_value = "data-agent")]
    storage: PathBuf,
    /// Address for /metrics, the API, health and reload.
    #[arg(long = "web.listen-address", default_value = "0.0.0.0:9099")]
    listen: String,
    /// Print every scrape batch as a JSON line on stdout (for debugging and tests).
    #[arg(long = "debug.dump-batches")]
    dump_batches: bool,
    /// Log level: error, warn, info, debug.
    #[arg(long = "log.level", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = match Config::load(&args.config, !args.no_expand_env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry-agent: invalid configuration: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if args.check {
        println!(
            "{}: OK ({} scrape jobs, {} remote_write endpoints)",
            args.config.display(),
            cfg.jobs.len(),
            cfg.remote_write.len()
        );
        return std::process::ExitCode::SUCCESS;
    }
    match run(args, cfg).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn offset_seed(cfg: &Config) -> u64 {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    fnv1a(format!("{}{}", host.trim(), cfg.external_labels).as_bytes())
}

async fn run(args: Args, cfg: Config) -> Result<(), String> {
    std::fs::create_dir_all(&args.storage)
        .map_err(|e| format!("storage.path {}: {e}", args.storage.display()))?;
    let (batch_tx, batch_rx) = mpsc::channel::<ScrapeBatch>(1024);
    let (update_tx, mut update_rx) = mpsc::channel::<Update>(256);
    let (reload_tx, mut reload_rx) = mpsc::channel::<oneshot::Sender<Result<(), String>>>(4);
    let ids = Arc::new(AtomicU64::new(1));
    let manager = Arc::new(Mutex::new(Manager::new(batch_tx, ids, offset_seed(&cfg))));
    manager.lock().await.apply_config(&cfg)?;
    let base = cfg.file.parent().unwrap_or(std::path::Path::new(".")).to_owned();
    let (mut disc_stop, disc_rx) = watch::channel(false);
    for job in &cfg.jobs {
        discovery::start(job, &base, update_tx.clone(), disc_rx.clone());
    }
    let shared = Arc::new(Shared {
        manager: manager.clone(),
        metrics: Metrics::default(),
        reload: reload_tx,
    });

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, jobs = cfg.jobs.len(), "ferry-agent listening");
    let (server_stop_tx, server_stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, router(shared.clone()))
            .with_graceful_shutdown(async {
                let _ = server_stop_rx.await;
            })
            .into_future(),
    );

    let consumer = tokio::spawn(consume(batch_rx, shared.clone(), args.dump_batches));
    let mgr = manager.clone();
    tokio::spawn(async move {
        while let Some(u) = update_rx.recv().await {
            mgr.lock().await.update(u);
        }
    });

    let mut hup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let config_path = args.config.clone();
    let expand = !args.no_expand_env;
    let do_reload = |reply: Option<oneshot::Sender<Result<(), String>>>| {
        let result = Config::load(&config_path, expand).map_err(|e| e.to_string());
        (result, reply)
    };
    loop {
        let (result, reply) = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => do_reload(None),
            Some(r) = reload_rx.recv() => do_reload(Some(r)),
        };
        let outcome = match result {
            Ok(new) => {
                let applied = manager.lock().await.apply_config(&new);
                if applied.is_ok() {
                    let _ = disc_stop.send(true);
                    let (s, r) = watch::channel(false);
                    disc_stop = s;
                    for job in &new.jobs {
                        discovery::start(job, &base, update_tx.clone(), r.clone());
                    }
                    shared.metrics.reloads.fetch_add(1, Relaxed);
                    tracing::info!("configuration reloaded");
                }
                applied
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            shared.metrics.reload_failures.fetch_add(1, Relaxed);
            tracing::error!(error = %e, "reload failed; the previous configuration stays in force");
        }
        if let Some(r) = reply {
            let _ = r.send(outcome);
        }
    }
    tracing::info!("shutting down: stopping scrape loops (no end-of-run stale markers on shutdown)");
    let _ = disc_stop.send(true);
    manager.lock().await.shutdown().await;
    drop(manager);
    let _ = server_stop_tx.send(());
    let _ = server.await;
    // The loops are gone and the manager dropped, so the batch channel closes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), consumer).await;
    Ok(())
}

/// Counts what the scrape pipeline produces and, with --debug.dump-batches, prints it.
async fn consume(mut rx: mpsc::Receiver<ScrapeBatch>, shared: Arc<Shared>, dump_batches: bool) {
    let mut dumper = dump::Dumper::default();
    let stdout = std::io::stdout();
    while let Some(b) = rx.recv().await {
        let m = &shared.metrics;
        m.batches.fetch_add(1, Relaxed);
        m.scrapes.fetch_add(1, Relaxed);
        if b.error.is_some() {
            m.scrape_failures.fetch_add(1, Relaxed);
        }
        m.samples_scraped.fetch_add(b.samples.len() as u64, Relaxed);
        m.stale_markers.fetch_add(
            b.samples
                .iter()
                .filter(|s| ferry_protocol::is_stale(s.value))
                .count() as u64,
            Relaxed,
        );
        m.series_defined.fetch_add(b.new_series.len() as u64, Relaxed);
        if dump_batches {
            let line = dumper.line(&b);
            let mut out = stdout.lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}
