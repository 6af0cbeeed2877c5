//! How to run a sender: a config template and a command line with placeholders, per known
//! sender (ferry-agent, Prometheus in agent mode, vmagent) or given by the user.
//!
//! Placeholders: `{binary}`, `{config}` (the written config file), `{data}` (a fresh data
//! directory), `{target}` (`host:port` to scrape at `/metrics`), `{targets_file}` (a file SD
//! JSON file holding that target; cases empty it to remove the target), `{url}` (the
//! receiver's write URL), `{listen}` (a free `127.0.0.1:port` for the sender's own HTTP
//! server) and, in config templates, `{remote_write_extra}` (the lines that select
//! Remote-Write 2.0, or nothing).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_protocol::WriteProto;

/// A sender under test.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub command: String,
    pub config: String,
    /// Protocols the sender can be configured for.
    pub protocols: Vec<WriteProto>,
}

/// Prometheus-format scrape + remote-write config used by ferry-agent and Prometheus.
const PROMETHEUS_CONFIG: &str = "global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: test
    file_sd_configs:
      - files: ['{targets_file}']
remote_write:
  - url: '{url}'
    queue_config: {min_backoff: 100ms, max_backoff: 2s, retry_on_http_429: true}
{remote_write_extra}";

/// vmagent takes the write URL on the command line; its file holds only scrape configs.
const VMAGENT_CONFIG: &str = "global:
  scrape_interval: 1s
scrape_configs:
  - job_name: test
    file_sd_configs:
      - files: ['{targets_file}']
";

impl Profile {
    /// A built-in profile by name, run from `binary`.
    pub fn builtin(name: &str, binary: &Path) -> Option<Profile> {
        let b = binary.display().to_string();
        let (command, config, protocols) = match name {
            "ferry-agent" => (
                format!(
                    "{b} --config.file={{config}} --storage.path={{data}} --web.listen-address={{listen}}"
                ),
                PROMETHEUS_CONFIG,
                vec![WriteProto::V1, WriteProto::V2],
            ),
            // Prometheus 2.x agent mode is RW1 only; 3.x also speaks RW2 (protobuf_message).
            "prometheus" => (
                format!(
                    "{b} --enable-feature=agent --config.file={{config}} --storage.agent.path={{data}} --web.listen-address={{listen}}"
                ),
                PROMETHEUS_CONFIG,
                vec![WriteProto::V1],
            ),
            "prometheus-rw2" => (
                format!(
                    "{b} --agent --config.file={{config}} --storage.agent.path={{data}} --web.listen-address={{listen}}"
                ),
                PROMETHEUS_CONFIG,
                vec![WriteProto::V2],
            ),
            "vmagent" => (
                format!(
                    "{b} -promscrape.config={{config}} -remoteWrite.url={{url}} -remoteWrite.tmpDataPath={{data}} -httpListenAddr={{listen}}"
                ),
                VMAGENT_CONFIG,
                vec![WriteProto::V1],
            ),
            _ => return None,
        };
        Some(Profile { name: name.into(), command, config: config.into(), protocols })
    }

    /// A user-given command; the config template defaults to the Prometheus one.
    pub fn custom(command: &str, config: Option<String>, protocols: Vec<WriteProto>) -> Profile {
        Profile {
            name: "custom".into(),
            command: command.into(),
            config: config.unwrap_or_else(|| PROMETHEUS_CONFIG.into()),
            protocols,
        }
    }
}

/// The values placeholders stand for in one run.
#[derive(Debug, Clone)]
pub struct Slots {
    pub config: PathBuf,
    pub targets_file: PathBuf,
    pub data: PathBuf,
    pub target: String,
    pub url: String,
    pub listen: String,
    pub proto: WriteProto,
}

fn fill(template: &str, s: &Slots) -> String {
    let extra = match s.proto {
        WriteProto::V1 => String::new(),
        WriteProto::V2 => "    protobuf_message: io.prometheus.write.v2.Request\n".into(),
    };
    template
        .replace("{config}", &s.config.display().to_string())
        .replace("{targets_file}", &s.targets_file.display().to_string())
        .replace("{data}", &s.data.display().to_string())
        .replace("{target}", &s.target)
        .replace("{url}", &s.url)
        .replace("{listen}", &s.listen)
        .replace("{remote_write_extra}", &extra)
}

/// Writes the file SD file: the target, or no target at all.
pub fn set_targets(s: &Slots, present: bool) -> std::io::Result<()> {
    let body = if present { format!("[{{\"targets\": [\"{}\"]}}]\n", s.target) } else { "[]\n".into() };
    // Written whole and renamed, so a watcher never reads half a file.
    let tmp = s.targets_file.with_extension("tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, &s.targets_file)
}

/// A running sender process.
#[derive(Debug)]
pub struct Running {
    child: Child,
    command: String,
    log: PathBuf,
}

impl Running {
    /// Writes the config and starts the command (through `sh -c "exec …"`, so signals reach
    /// the sender itself). Its output goes to `{data}/../sender.log`.
    pub fn start(p: &Profile, s: &Slots) -> std::io::Result<Running> {
        std::fs::write(&s.config, fill(&p.config, s))?;
        if !s.targets_file.exists() {
            set_targets(s, true)?;
        }
        std::fs::create_dir_all(&s.data)?;
        let command = fill(&p.command, s);
        let log = s.config.with_file_name("sender.log");
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Running { child, command, log })
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the sender's output (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(mut self, grace: Duration) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL: a crash.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
