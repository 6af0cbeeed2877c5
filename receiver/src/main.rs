//! `ferry-receiver`: Remote-Write 1.0/2.0 ingest into an embedded sled store, with a read API.
fn main() -> std::process::ExitCode {
    eprintln!(
        "ferry-receiver {}: not implemented yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::from(2)
}
