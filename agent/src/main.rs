//! `ferry-agent`: discover, relabel, scrape, WAL, remote write.
//!
//! Not built yet: the scrape pipeline is issue #4, the WAL and queue issue #5, Kubernetes
//! discovery issue #6. Until then the binary says so and exits non-zero, so nobody mistakes it
//! for a working agent.

fn main() -> std::process::ExitCode {
    eprintln!(
        "ferry-agent {}: not implemented yet (scrape pipeline, WAL and remote write are in progress)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::from(2)
}
