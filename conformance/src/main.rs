//! `ferry-conformance`: remote-write spec tests for any sender and any receiver.
//!
//! Not built yet (issue #7). Until then the binary says so and exits non-zero.

fn main() -> std::process::ExitCode {
    eprintln!("ferry-conformance {}: not implemented yet", env!("CARGO_PKG_VERSION"));
    std::process::ExitCode::from(2)
}
