//! Sender mode: runs a remote-write sender (ferry-agent, Prometheus, vmagent, or any command)
//! against a scrape target and a scripted receiver on loopback, once per case, and checks what
//! arrived.
//!
//! - [`profile`]: how to configure and start each sender;
//! - [`target`]: the exposition each case serves;
//! - [`sink`]: the scripted receiver that records and decodes requests;
//! - [`cases`]: the cases and their checks.

pub mod cases;
pub mod profile;
pub mod sink;
pub mod target;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferry_protocol::WriteProto;

use self::cases::{Case, Obs, now_ms};
use self::profile::{Profile, Running, Slots};

use crate::report::{CaseResult, Outcome};

#[derive(Debug, Clone)]
pub struct Options {
    pub profile: Profile,
    pub proto: WriteProto,
    /// Cases run at once (each with its own sender, target and receiver).
    pub parallel: usize,
    /// Only cases whose id contains one of these comma-separated parts.
    pub filter: Option<String>,
    /// Where runs keep their configs, data and sender logs.
    pub workdir: PathBuf,
}

/// Runs every (selected) case; results in case order.
pub fn run(opts: &Options) -> Vec<CaseResult> {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let cases: Vec<Case> = cases::all()
        .into_iter()
        .filter(|c| opts.filter.as_ref().is_none_or(|f| f.split(',').any(|p| c.id.contains(p.trim()))))
        .collect();
    let mut results: Vec<Option<CaseResult>> = (0..cases.len()).map(|_| None).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(&mut results);
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { return };
                    let outcome = run_case(&rt, opts, case, i);
                    let r = CaseResult { id: case.id, level: case.level, clause: case.clause, outcome };
                    out.lock().expect("results lock")[i] = Some(r);
                }
            });
        }
    });
    results.into_iter().flatten().collect()
}

/// A free port for the sender's own listener, taken below Linux's ephemeral range (32768+)
/// and never handed out twice by this process: a port from `bind(:0)` could be given by the
/// kernel to one of the concurrent targets or receivers before the sender binds it.
fn free_addr() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 50) * 200;
    for _ in 0..10_000 {
        let port = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 10_000;
        if let Ok(port) = u16::try_from(port)
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return format!("127.0.0.1:{port}");
        }
    }
    "127.0.0.1:0".into()
}

fn run_case(rt: &tokio::runtime::Runtime, opts: &Options, case: &Case, n: usize) -> Outcome {
    if let Some(only) = case.only
        && only != opts.proto
    {
        return Outcome::NotApplicable(format!("only for {}", only.message_name()));
    }
    let started = rt.block_on(async {
        let target = target::Target::start((case.target)()).await?;
        let sink = sink::Sink::start((case.sink)()).await?;
        Ok::<_, std::io::Error>((target, sink))
    });
    let (target, sink) = match started {
        Ok(x) => x,
        Err(e) => return Outcome::Fail(format!("harness: cannot listen on loopback: {e}")),
    };
    let dir = opts.workdir.join(format!("{n:02}-{}", case.id));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Outcome::Fail(format!("harness: {}: {e}", dir.display()));
    }
    let slots = Slots {
        config: dir.join("config.yaml"),
        targets_file: dir.join("targets.json"),
        data: dir.join("data"),
        target: target.addr.to_string(),
        url: sink.url(),
        listen: free_addr(),
        proto: opts.proto,
    };
    let start_ms = now_ms();
    let t0 = Instant::now();
    let mut sender = match Running::start(&opts.profile, &slots) {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(format!("cannot start the sender: {e}")),
    };
    let mut crashed = false;
    let mut removed = false;
    let observe = |sink: &sink::Sink| Obs {
        requests: sink.requests(),
        start_ms,
        end_ms: now_ms(),
        proto: opts.proto,
        scrapes: target.scrapes(),
    };
    while t0.elapsed() < case.run_for {
        std::thread::sleep(Duration::from_millis(200));
        if !sender.alive() {
            return Outcome::Fail(format!(
                "the sender exited early ({}): {}",
                sender.command(),
                sender.log_tail()
            ));
        }
        if let Some(at) = case.crash_at
            && !crashed
            && t0.elapsed() >= at
        {
            sender.crash();
            crashed = true;
            sender = match Running::start(&opts.profile, &slots) {
                Ok(r) => r,
                Err(e) => return Outcome::Fail(format!("cannot restart the sender: {e}")),
            };
            continue;
        }
        if let Some(when) = case.remove_target_when
            && !removed
            && when(&observe(&sink))
        {
            if let Err(e) = profile::set_targets(&slots, false) {
                return Outcome::Fail(format!("harness: rewriting {}: {e}", slots.targets_file.display()));
            }
            removed = true;
        }
        if t0.elapsed() > Duration::from_secs(2) && case.crash_at.is_none() && (case.done)(&observe(&sink)) {
            break;
        }
    }
    sender.stop(Duration::from_secs(15));
    let obs = observe(&sink);
    let outcome = match (case.check)(&obs) {
        Ok(()) => Outcome::Pass,
        Err(why) => Outcome::Fail(why),
    };
    if outcome == Outcome::Pass {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}
