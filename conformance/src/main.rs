//! `ferry-conformance`: remote-write compliance tests for any sender and any receiver.
//!
//! `ferry-conformance receiver --url URL [--remote-read-url URL] [--header K:V]... [--format table|json|junit]`
//! runs the receiver cases; `ferry-conformance sender --profile NAME --binary PATH [--protocol 1|2]`
//! (or `--command TEMPLATE`) runs the sender cases. Both exit 1 when a MUST fails.

use clap::{Parser, Subcommand, ValueEnum};
use ferry_conformance::receiver::{self, Target};
use ferry_conformance::report;
use ferry_conformance::sender::{self, profile::Profile};
use ferry_protocol::WriteProto;

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
    /// Run a sender against a scripted scrape target and receiver, once per case.
    Sender {
        /// A built-in profile: ferry-agent, prometheus (2.x agent mode, RW 1.0),
        /// prometheus-rw2 (3.x `--agent`), vmagent.
        #[arg(long, required_unless_present = "command")]
        profile: Option<String>,
        /// The sender binary for --profile.
        #[arg(long, requires = "profile")]
        binary: Option<std::path::PathBuf>,
        /// Any other sender: a command line with {config}, {data}, {target}, {url}, {listen}.
        #[arg(long, conflicts_with = "profile")]
        command: Option<String>,
        /// Config template for --command (default: a Prometheus scrape + remote_write config
        /// with {target}, {url} and {remote_write_extra}).
        #[arg(long = "config-template", requires = "command")]
        config_template: Option<std::path::PathBuf>,
        /// Remote-Write version to configure: 1 or 2.
        #[arg(long, default_value_t = 1)]
        protocol: u8,
        /// Only cases whose name contains one of these (comma-separated).
        #[arg(long)]
        cases: Option<String>,
        /// Cases run at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Where each case keeps its config, data and sender log (kept for failed cases).
        #[arg(long)]
        workdir: Option<std::path::PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

fn main() -> std::process::ExitCode {
    match Args::parse().mode {
        Mode::Receiver { url, remote_read_url, headers, format } => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            rt.block_on(receiver_mode(url, remote_read_url, headers, format))
        }
        Mode::Sender {
            profile,
            binary,
            command,
            config_template,
            protocol,
            cases,
            parallel,
            workdir,
            format,
        } => {
            let proto = match protocol {
                1 => WriteProto::V1,
                2 => WriteProto::V2,
                p => return usage(&format!("--protocol {p}: use 1 or 2")),
            };
            let profile = match (profile, command) {
                (Some(name), _) => {
                    let binary = binary.unwrap_or_else(|| name.trim_end_matches("-rw2").into());
                    match Profile::builtin(&name, &binary) {
                        Some(p) => p,
                        None => {
                            return usage(&format!(
                                "unknown profile {name:?}: use ferry-agent, prometheus, prometheus-rw2 or vmagent"
                            ));
                        }
                    }
                }
                (None, Some(cmd)) => {
                    let config = match config_template.map(std::fs::read_to_string).transpose() {
                        Ok(c) => c,
                        Err(e) => return usage(&format!("--config-template: {e}")),
                    };
                    Profile::custom(&cmd, config, vec![proto])
                }
                (None, None) => return usage("give --profile or --command"),
            };
            if !profile.protocols.contains(&proto) {
                return usage(&format!(
                    "profile {} cannot be configured for {} (use --protocol {})",
                    profile.name,
                    proto.message_name(),
                    if proto == WriteProto::V1 { 2 } else { 1 }
                ));
            }
            let workdir = workdir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("ferry-conformance-sender-{}", std::process::id()))
            });
            let opts = sender::Options { profile, proto, parallel, filter: cases, workdir };
            let results = sender::run(&opts);
            // Passing cases remove their folders and failing ones keep theirs for a look, so
            // the root is left behind only when something failed.
            let _ = std::fs::remove_dir(&opts.workdir);
            emit(&results, format, "sender")
        }
    }
}

fn usage(msg: &str) -> std::process::ExitCode {
    eprintln!("ferry-conformance: {msg}");
    std::process::ExitCode::from(2)
}

fn emit(results: &[report::CaseResult], format: Format, suite: &str) -> std::process::ExitCode {
    let text = match format {
        Format::Table => report::table(results),
        Format::Json => report::json(results),
        Format::Junit => report::junit(suite, results),
    };
    println!("{text}");
    if report::must_failed(results) {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

async fn receiver_mode(
    url: String,
    remote_read_url: Option<String>,
    headers: Vec<String>,
    format: Format,
) -> std::process::ExitCode {
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
    emit(&results, format, "receiver")
}
