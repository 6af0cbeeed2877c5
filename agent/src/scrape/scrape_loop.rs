//! One task per target: wait for the target's phase, scrape every interval, hand each batch
//! on, keep the status `/api/v1/targets` shows; when the target goes away (not on shutdown),
//! write end-of-run stale markers (reference §3.5).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use super::append::{Fetched, TargetState};
use super::batch::ScrapeBatch;
use super::fetch::Fetcher;
use super::target::Target;
use crate::config::Job;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What `/api/v1/targets` reports about a target.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub health: &'static str,
    pub last_error: String,
    /// ms since the epoch; 0 = never.
    pub last_scrape: i64,
    pub last_duration: f64,
    pub cached_series: usize,
}

/// A job-wide error that replaces scraping while set (`target_limit` exceeded): no request
/// is made, and every tick reports up=0 with this error.
pub type Forced = Arc<Mutex<Option<String>>>;

/// Why a loop stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Running,
    /// The target left discovery or its config changed: write end-of-run markers.
    Removed,
    /// The agent is shutting down: no markers.
    Shutdown,
}

/// A running loop.
#[derive(Debug)]
pub struct LoopHandle {
    pub target: Target,
    pub status: Arc<Mutex<Status>>,
    stop: watch::Sender<Stop>,
    pub join: tokio::task::JoinHandle<()>,
}

impl LoopHandle {
    pub fn stop(&self, why: Stop) {
        let _ = self.stop.send(why);
    }
}

/// The first wait: the target fires when `unix_ms mod interval == offset`.
fn first_delay(interval: Duration, offset_seed: u64, hash: u64) -> Duration {
    let iv = interval.as_millis().max(1) as u64;
    let offset = (hash ^ offset_seed) % iv;
    let now = now_ms() as u64 % iv;
    let mut wait = (iv - now) + offset;
    if wait > iv {
        wait -= iv;
    }
    Duration::from_millis(wait)
}

/// Starts a loop for `target`; batches go to `out`.
pub fn spawn(
    target: Target,
    job: Arc<Job>,
    fetcher: Arc<Fetcher>,
    ids: Arc<AtomicU64>,
    offset_seed: u64,
    out: mpsc::Sender<ScrapeBatch>,
    forced: Forced,
) -> LoopHandle {
    let status = Arc::new(Mutex::new(Status { health: "unknown", ..Default::default() }));
    let (stop_tx, stop_rx) = watch::channel(Stop::Running);
    let join = tokio::spawn(run(
        target.clone(),
        job,
        fetcher,
        ids,
        offset_seed,
        out,
        status.clone(),
        stop_rx,
        forced,
    ));
    LoopHandle { target, status, stop: stop_tx, join }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    target: Target,
    job: Arc<Job>,
    fetcher: Arc<Fetcher>,
    ids: Arc<AtomicU64>,
    offset_seed: u64,
    out: mpsc::Sender<ScrapeBatch>,
    status: Arc<Mutex<Status>>,
    mut stop: watch::Receiver<Stop>,
    forced: Forced,
) {
    let mut state = TargetState::new(target.public.clone(), target.hash, ids);
    let interval = target.interval;
    let start = tokio::time::Instant::now() + first_delay(interval, offset_seed, target.hash);
    let mut ticker = tokio::time::interval_at(start, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scraped_once = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        let ts = now_ms();
        let started = Instant::now();
        let forced_error = forced.lock().expect("forced lock").clone();
        let result = match forced_error {
            Some(e) => Err(super::fetch::FetchError { msg: e, body_size_limit_hit: false }),
            None => fetcher.scrape(&target.url, &job, target.timeout).await,
        };
        let fetched = match &result {
            Ok(r) => Fetched::Body {
                body: &r.body,
                content_type: r.content_type.as_deref(),
                decoded_len: r.decoded_len,
            },
            Err(e) => Fetched::Failed { error: e.msg.clone(), body_size_limit_hit: e.body_size_limit_hit },
        };
        let batch = state.scrape(&job, fetched, ts, now_ms(), started.elapsed().as_secs_f64());
        scraped_once = true;
        {
            let mut s = status.lock().expect("status lock");
            s.health = if batch.error.is_none() { "up" } else { "down" };
            s.last_error = batch.error.clone().unwrap_or_default();
            s.last_scrape = ts;
            s.last_duration = started.elapsed().as_secs_f64();
            s.cached_series = state.cached_series();
        }
        if let Some(e) = &batch.error {
            tracing::debug!(url = %target.url, error = %e, "scrape failed");
        }
        if out.send(batch).await.is_err() {
            return; // the consumer is gone: the agent is stopping
        }
    }
    if *stop.borrow() != Stop::Removed || !scraped_once {
        return;
    }
    // End of run: the next tick is the stale time; wait one more tick and a tenth of the
    // interval, so a target that came back under a new loop wins (its samples are newer).
    ticker.tick().await;
    let stale_at = now_ms();
    ticker.tick().await;
    tokio::time::sleep(interval / 10).await;
    let _ = out.send(state.end_of_run(&job, stale_at)).await;
}
