//! `ferry-agent` command line: flags, wiring, reload and signals; nothing else.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use clap::Parser;
use ferry_agent::config::{Config, fnv1a};
use ferry_agent::remote::queue::{self, EndpointMetrics};
use ferry_agent::scrape::batch::ScrapeBatch;
use ferry_agent::scrape::fetch::Fetcher;
use ferry_agent::scrape::manager::{Manager, Update};
use ferry_agent::telemetry::{Metrics, Shared, router};
use ferry_agent::wal::{Options, Wal};
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
    /// How long shutdown keeps sending before leaving the rest in the WAL.
    #[arg(long = "storage.remote.flush-deadline", default_value = "1m", value_parser = dur)]
    flush_deadline: std::time::Duration,
    /// Also run a receiver in this process, listening here (single-machine setups and the
    /// quickstart). Off unless given.
    #[arg(long = "receiver.listen-address")]
    receiver_listen: Option<String>,
    /// Storage of the embedded receiver (default: <storage.path>/receiver).
    #[arg(long = "receiver.storage-path")]
    receiver_storage: Option<PathBuf>,
    /// Configuration file of the embedded receiver (tenants, auth, limits, retention).
    #[arg(long = "receiver.config-file")]
    receiver_config: Option<PathBuf>,
    /// Print every scrape batch as a JSON line on stdout (for debugging and tests).
    #[arg(long = "debug.dump-batches")]
    dump_batches: bool,
    /// Log level: error, warn, info, debug.
    #[arg(long = "log.level", default_value = "info")]
    log_level: String,
    /// Threads that run scrapes, queues and HTTP: 1 (the default) runs them all on one
    /// thread, 0 gives one per core. Disk writes and fsyncs have threads of their own.
    #[arg(long = "runtime.worker-threads", env = "FERRY_WORKER_THREADS", default_value_t = 1)]
    worker_threads: usize,
}

fn dur(s: &str) -> Result<std::time::Duration, String> {
    ferry_agent::duration::parse(s)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // One thread by default: an agent is mostly waiting, and with two workers on two cores
    // each wake-up of a task crossed threads (futex, eventfd, a parked worker woken). The
    // e2e bench at 500k series measured 7% less CPU and 3-4 MiB less RSS with one
    // (docs/performance.md); at 1.5 us a sample one core would keep up with about 6 million
    // series at 10 s (500k were measured).
    let runtime = match args.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b
        }
    }
    .enable_all()
    .build();
    match runtime {
        Ok(rt) => rt.block_on(agent_main(args)),
        Err(e) => {
            eprintln!("ferry-agent: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn agent_main(args: Args) -> std::process::ExitCode {
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
    // The embedded receiver starts first, so the queues find it listening.
    let (receiver_stop, receiver) = match &args.receiver_listen {
        Some(listen) => {
            let config = match &args.receiver_config {
                Some(p) => ferry_receiver::config::Config::load(p).map_err(|e| e.to_string())?,
                None => ferry_receiver::config::Config::default(),
            };
            let (tx, rx) = oneshot::channel::<()>();
            let opts = ferry_receiver::server::Options {
                listen: listen.clone(),
                storage: args.receiver_storage.clone().unwrap_or_else(|| args.storage.join("receiver")),
                config,
                checkpoint_interval: std::time::Duration::from_secs(60),
                cache_bytes: 64 << 20,
            };
            let running = ferry_receiver::server::start(opts, async {
                let _ = rx.await;
            })
            .await?;
            (Some(tx), Some(running))
        }
        None => (None, None),
    };
    let (batch_tx, batch_rx) = mpsc::channel::<ScrapeBatch>(1024);
    let (update_tx, mut update_rx) = mpsc::channel::<Update>(256);
    let (reload_tx, mut reload_rx) = mpsc::channel::<oneshot::Sender<Result<(), String>>>(4);
    // The WAL exists only when there is somewhere to send to.
    let wal = if cfg.remote_write.is_empty() {
        tracing::warn!("no remote_write configured: scraped data is not stored or forwarded");
        None
    } else {
        let opts = Options {
            sync_interval: cfg.wal.sync_interval,
            max_size: cfg.wal.max_size,
            segment_size: (cfg.wal.max_size / 16).clamp(8 << 10, 64 << 20),
        };
        let dir = args.storage.join("wal");
        let (wal, rec) =
            Wal::open(&dir, opts).map_err(|e| format!("opening the WAL in {}: {e}", dir.display()))?;
        if rec.torn_bytes > 0 || rec.corrupt_records > 0 {
            tracing::warn!(
                torn_bytes = rec.torn_bytes,
                corrupt_records = rec.corrupt_records,
                "WAL repaired at start-up"
            );
        }
        tracing::info!(segments = rec.segments, records = rec.records, "WAL opened");
        Some((wal, rec.max_series_id))
    };
    let ids = Arc::new(AtomicU64::new(wal.as_ref().map_or(1, |w| w.1 + 1)));
    let wal = wal.map(|w| w.0);
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
        wal: wal.clone(),
        endpoints: Default::default(),
        reload: reload_tx,
    });
    // WAL writer: a blocking thread fed by the batch consumer; a ticker keeps the tail synced.
    let (wal_tx, wal_thread) = match &wal {
        Some(w) => {
            let (tx, rx) = std::sync::mpsc::sync_channel::<ScrapeBatch>(1024);
            let w2 = w.clone();
            let t = std::thread::spawn(move || wal_writer(w2, rx));
            let w3 = w.clone();
            let every = cfg.wal.sync_interval.max(std::time::Duration::from_millis(10));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let w = w3.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || w.sync()).await {
                        tracing::error!(error = %e, "WAL: fsync failed");
                    }
                }
            });
            (Some(tx), Some(t))
        }
        None => (None, None),
    };
    let (mut queue_stop, mut queues) = start_queues(&cfg, &base, wal.as_ref(), &shared, args.flush_deadline);
    let mut remote_fingerprint = format!("{:?}", cfg.remote_write);

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, jobs = cfg.jobs.len(), "ferry-agent listening");
    if let Some(r) = &receiver {
        eprintln!(
            "\nFerry is running (Ctrl-C stops it):\n  targets:  http://{addr}/api/v1/targets\n  agent:    http://{addr}/metrics\n  data:     curl -s 'http://{}/api/v1/query?query=up'\n  export:   curl -s 'http://{}/api/v1/export?match[]={{job=~\".+\"}}'\n",
            r.addr, r.addr
        );
    }
    let (server_stop_tx, server_stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, router(shared.clone()))
            .with_graceful_shutdown(async {
                let _ = server_stop_rx.await;
            })
            .into_future(),
    );

    let (consumer_stop, consumer_stop_rx) = oneshot::channel::<()>();
    let consumer =
        tokio::spawn(consume(batch_rx, shared.clone(), args.dump_batches, wal_tx, consumer_stop_rx));
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
                    let fp = format!("{:?}", new.remote_write);
                    if fp != remote_fingerprint && wal.is_some() {
                        // Old queues flush and save their cursors; new ones resume from them.
                        let _ = queue_stop.send(true);
                        for q in queues.drain(..) {
                            let _ = q.await;
                        }
                        (queue_stop, queues) =
                            start_queues(&new, &base, wal.as_ref(), &shared, args.flush_deadline);
                        remote_fingerprint = fp;
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
    // The loops are gone: the consumer drains what they produced and ends, which closes the
    // WAL writer's channel. (The manager itself outlives this point in other tasks, so its
    // end of the batch channel never closes by itself.)
    let _ = consumer_stop.send(());
    let _ = consumer.await;
    // The consumer dropped the WAL channel: the writer drains, syncs and exits.
    if let Some(t) = wal_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let _ = queue_stop.send(true);
    for q in queues {
        let _ = q.await;
    }
    // Last: the embedded receiver, after the queues have flushed into it.
    if let (Some(stop), Some(r)) = (receiver_stop, receiver) {
        let _ = stop.send(());
        let _ = r.done.await;
    }
    Ok(())
}

/// Starts one queue per endpoint; they run until the returned sender says stop.
fn start_queues(
    cfg: &Config,
    base: &std::path::Path,
    wal: Option<&Arc<Wal>>,
    shared: &Arc<Shared>,
    flush_deadline: std::time::Duration,
) -> (watch::Sender<bool>, Vec<tokio::task::JoinHandle<()>>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::new();
    let mut endpoints = shared.endpoints.lock().expect("endpoints lock");
    endpoints.clear();
    let Some(wal) = wal else { return (stop_tx, handles) };
    for rw in &cfg.remote_write {
        let fetcher = match Fetcher::new(&rw.http, base) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(endpoint = %rw.name, error = %e, "remote write: cannot build the HTTP client; this endpoint sends nothing");
                continue;
            }
        };
        let metrics = Arc::new(EndpointMetrics::default());
        endpoints.push((rw.name.clone(), metrics.clone()));
        handles.push(tokio::spawn(queue::run(
            rw.clone(),
            fetcher,
            wal.clone(),
            cfg.external_labels.clone(),
            metrics,
            stop_rx.clone(),
            flush_deadline,
        )));
    }
    (stop_tx, handles)
}

/// Appends batches to the WAL until the channel closes, then syncs.
fn wal_writer(wal: Arc<Wal>, rx: std::sync::mpsc::Receiver<ScrapeBatch>) {
    let mut failing = false;
    while let Ok(b) = rx.recv() {
        match wal.append(&b) {
            Ok(_) => {
                if failing {
                    tracing::info!("WAL: writes succeed again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, samples = b.samples.len(), "WAL: write failed, scrape dropped (counted in ferry_wal_write_failures_total); free disk space or raise wal.max_size");
                    failing = true;
                }
            }
        }
    }
    if let Err(e) = wal.sync() {
        tracing::error!(error = %e, "WAL: final fsync failed");
    }
}

/// Counts what the scrape pipeline produces and, with --debug.dump-batches, prints it.
async fn consume(
    mut rx: mpsc::Receiver<ScrapeBatch>,
    shared: Arc<Shared>,
    dump_batches: bool,
    wal: Option<std::sync::mpsc::SyncSender<ScrapeBatch>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut dumper = dump::Dumper::default();
    let stdout = std::io::stdout();
    let mut draining = false;
    loop {
        let b = if draining {
            match rx.try_recv() {
                Ok(b) => b,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                b = rx.recv() => match b {
                    Some(b) => b,
                    None => break,
                },
                _ = &mut stop => {
                    draining = true;
                    continue;
                }
            }
        };
        let m = &shared.metrics;
        m.batches.fetch_add(1, Relaxed);
        m.scrapes.fetch_add(1, Relaxed);
        if b.error.is_some() {
            m.scrape_failures.fetch_add(1, Relaxed);
        }
        m.samples_scraped.fetch_add(b.samples.len() as u64, Relaxed);
        m.stale_markers.fetch_add(
            b.samples.iter().filter(|s| ferry_protocol::is_stale(s.value)).count() as u64,
            Relaxed,
        );
        m.series_defined.fetch_add(b.new_series.len() as u64, Relaxed);
        if dump_batches {
            let line = dumper.line(&b);
            let mut out = stdout.lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        if let Some(w) = &wal {
            // Usually the channel has room. A full one means the disk is slower than
            // scraping: wait on a blocking thread rather than lose the batch. (Always going
            // through spawn_blocking woke a pool thread for every scrape.)
            if let Err(std::sync::mpsc::TrySendError::Full(b)) = w.try_send(b) {
                let w = w.clone();
                let _ = tokio::task::spawn_blocking(move || w.send(b).is_ok()).await;
            }
        }
    }
}
