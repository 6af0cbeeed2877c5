//! `ferry-receiver` command line: flags, start-up, background maintenance, signals.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ferry_receiver::config::Config;
use ferry_receiver::selector::parse_duration;
use ferry_receiver::server::{Options, start};

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
    let opts = Options {
        listen: args.listen,
        storage: args.storage,
        config,
        checkpoint_interval: args.checkpoint_interval,
        cache_bytes: args.cache_mib << 20,
    };
    let running = start(opts, shutdown_signal()).await?;
    running.done.await.map_err(|e| format!("server task: {e}"))?
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
