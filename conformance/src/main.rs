//! `ferry-conformance`: remote-write compliance tests for any sender and any receiver.
//!
//! `ferry-conformance receiver --url URL [--remote-read-url URL] [--header K:V]... [--format table|json|junit]`
//! runs the receiver cases and exits 1 when a MUST fails. (Sender mode is not built yet.)

use clap::{Parser, Subcommand, ValueEnum};
use ferry_conformance::receiver::{self, Target};
use ferry_conformance::report;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Json,
    Junit,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Send crafted requests to a receiver and check its answers.
    Receiver {
        /// The receiver's write URL, e.g. http://127.0.0.1:9201/api/v1/write
        #[arg(long)]
        url: String,
        /// A remote-read URL to check what was stored (e.g. http://127.0.0.1:9201/api/v1/read).
        #[arg(long = "remote-read-url")]
        remote_read_url: Option<String>,
        /// Extra request header, `Name: value` (repeatable), e.g. for auth or tenants.
        #[arg(long = "header")]
        headers: Vec<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Args { mode: Mode::Receiver { url, remote_read_url, headers, format } } = Args::parse();
    let mut hs = Vec::new();
    for h in headers {
        match h.split_once(':') {
            Some((k, v)) => hs.push((k.trim().to_owned(), v.trim().to_owned())),
            None => {
                eprintln!("ferry-conformance: --header {h:?}: expected `Name: value`");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let results = receiver::run(Target { url, remote_read_url, headers: hs }).await;
    let text = match format {
        Format::Table => report::table(&results),
        Format::Json => report::json(&results),
        Format::Junit => report::junit("receiver", &results),
    };
    println!("{text}");
    if report::must_failed(&results) {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
