//! Test harness shared by the agent's end-to-end tests: scriptable scrape targets, the
//! real `ferry-agent` process (restartable with `kill -9`), and a tiny HTTP client.
#![allow(dead_code)]

pub mod kube_api;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Reads an HTTP/1.1 request head: the request line and the headers (names lower-cased).
/// None at the end of the stream.
pub fn read_head(r: &mut impl BufRead) -> Option<(String, BTreeMap<String, String>)> {
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    Some((line, headers))
}

// ---------------------------------------------------------------------------------------------
// A scriptable target server.

#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
    pub gzip: bool,
    pub delay: Duration,
}

impl Reply {
    pub fn text(body: &str) -> Reply {
        Reply {
            status: 200,
            content_type: Some("text/plain; version=0.0.4"),
            body: body.as_bytes().to_vec(),
            gzip: false,
            delay: Duration::ZERO,
        }
    }
    pub fn status(code: u16) -> Reply {
        Reply {
            status: code,
            content_type: Some("text/plain"),
            body: b"oops\n".to_vec(),
            gzip: false,
            delay: Duration::ZERO,
        }
    }
}

#[derive(Clone)]
pub struct Target {
    pub addr: String,
    pub reply: Arc<Mutex<Reply>>,
    pub requests: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
}

impl Target {
    pub fn start(reply: Reply) -> Target {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let t = Target {
            addr: l.local_addr().unwrap().to_string(),
            reply: Arc::new(Mutex::new(reply)),
            requests: Default::default(),
        };
        let t2 = t.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let t = t2.clone();
                std::thread::spawn(move || t.serve(conn));
            }
        });
        t
    }

    pub fn serve(&self, mut conn: TcpStream) {
        let mut r = BufReader::new(conn.try_clone().unwrap());
        let Some((_, headers)) = read_head(&mut r) else { return };
        self.requests.lock().unwrap().push(headers);
        let reply = self.reply.lock().unwrap().clone();
        std::thread::sleep(reply.delay);
        let mut body = reply.body.clone();
        let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
        if let Some(ct) = reply.content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        if reply.gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&body).unwrap();
            body = e.finish().unwrap();
            head.push_str("Content-Encoding: gzip\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(&body);
    }

    pub fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }
}

// ---------------------------------------------------------------------------------------------
// The agent under test.

pub struct Agent {
    pub child: Child,
    pub lines: mpsc::Receiver<Value>,
    pub web: String,
    pub dir: std::path::PathBuf,
    /// Extra environment for the process (kept across restarts).
    pub env: Vec<(String, String)>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ferry-agent-test-{tag}-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let d = std::path::PathBuf::from(d.to_string_lossy().replace([' ', '{', '}', ':', ','], ""));
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Agent {
    pub fn start(tag: &str, config: &str) -> Agent {
        Self::start_env(tag, config, &[])
    }

    /// [`Agent::start`] with extra environment variables.
    pub fn start_env(tag: &str, config: &str, env: &[(&str, &str)]) -> Agent {
        let dir = tmpdir(tag);
        std::fs::write(dir.join("agent.yaml"), config).unwrap();
        let web = format!("127.0.0.1:{}", free_port());
        Self::spawn_env(dir, web, env)
    }

    /// SIGKILL, then start again on the same storage, config and port.
    pub fn kill9_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let (child, lines) = Self::spawn_process(&self.dir, &self.web, &self.env);
        self.child = child;
        self.lines = lines;
        self.wait_ready();
    }

    /// Starts the binary on `dir`'s config and storage.
    pub fn spawn(dir: std::path::PathBuf, web: String) -> Agent {
        Self::spawn_env(dir, web, &[])
    }

    /// [`Agent::spawn`] with extra environment variables.
    pub fn spawn_env(dir: std::path::PathBuf, web: String, env: &[(&str, &str)]) -> Agent {
        let env: Vec<(String, String)> =
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let (child, lines) = Self::spawn_process(&dir, &web, &env);
        let a = Agent { child, lines, web, dir, env };
        a.wait_ready();
        a
    }

    fn spawn_process(
        dir: &std::path::Path,
        web: &str,
        env: &[(String, String)],
    ) -> (Child, mpsc::Receiver<Value>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg(format!("--config.file={}", dir.join("agent.yaml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .arg("--debug.dump-batches")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("FERRY_TEST_LOGS").is_some() {
                    eprintln!("[agent] {line}");
                }
            }
        });
        (child, rx)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(&self.web, "GET", "/-/ready").0 != 200 {
            assert!(Instant::now() < deadline, "agent did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The next batch whose samples include `name` (or any batch for `None`).
    pub fn next_batch(&self, timeout: Duration) -> Value {
        self.lines.recv_timeout(timeout).expect("no batch in time")
    }

    /// Batches until `pred` holds for one; returns it.
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now()).expect("condition not met in time");
            let b = self.next_batch(left);
            if pred(&b) {
                return b;
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ =
        write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

pub fn sample<'a>(b: &'a Value, name: &str) -> Option<&'a Value> {
    b["samples"].as_array()?.iter().find(|s| s["labels"]["__name__"] == name)
}

pub fn up(b: &Value) -> f64 {
    sample(b, "up").expect("up")["v"].as_f64().unwrap()
}

pub fn has_instance(b: &Value, addr: &str) -> bool {
    sample(b, "up").is_some_and(|s| s["labels"]["instance"] == addr)
}
