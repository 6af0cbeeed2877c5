//! The harness checks receivers for real: run against ferry-receiver (in-process, real HTTP on
//! loopback) every case passes; run against a deliberately broken receiver the right MUST
//! cases fail and the exit code says so.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

fn run(url: &str, read_url: Option<&str>, format: &str) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry-conformance"));
    cmd.args(["receiver", "--url", url, "--format", format]);
    if let Some(r) = read_url {
        cmd.args(["--remote-read-url", r]);
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn ferry_receiver_passes_every_case() {
    let dir = std::env::temp_dir().join(format!("ferry-conformance-{}", std::process::id()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = rt
        .block_on(ferry_receiver::server::start(
            ferry_receiver::server::Options {
                listen: "127.0.0.1:0".into(),
                storage: dir.clone(),
                config: Default::default(),
                checkpoint_interval: std::time::Duration::from_secs(60),
                cache_bytes: 16 << 20,
            },
            async {
                let _ = stop_rx.await;
            },
        ))
        .unwrap();
    let base = format!("http://{}", running.addr);
    let (code, json) = run(&format!("{base}/api/v1/write"), Some(&format!("{base}/api/v1/read")), "json");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let failed: Vec<&serde_json::Value> =
        v["cases"].as_array().unwrap().iter().filter(|c| c["result"] != "pass").collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(code, 0);
    let _ = stop_tx.send(());
    let _ = rt.block_on(running.done);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_broken_receiver_fails_the_right_must_cases() {
    // Answers 200 to everything, with no *-Written headers and no body: a receiver that
    // decodes nothing and checks nothing.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let mut seen = Vec::new();
                // Read headers and the body (Content-Length) before answering.
                loop {
                    let Ok(n) = c.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            });
        }
    });
    let (code, json) = run(&format!("http://{addr}/api/v1/write"), None, "json");
    assert_eq!(code, 1, "a MUST failed, so the exit code is 1");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let result = |id: &str| {
        v["cases"].as_array().unwrap().iter().find(|c| c["case"] == id).unwrap_or_else(|| panic!("{id}"))["result"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for id in [
        "rw2_written_headers_exact",
        "unsupported_content_type_is_415",
        "unsupported_encoding_is_415",
        "corrupt_snappy_is_400",
        "partial_write_is_not_2xx",
        "odd_label_refs_are_400",
        "invalid_histogram_is_400",
    ] {
        assert_eq!(result(id), "fail", "{id} must catch the broken receiver");
    }
    assert_eq!(result("rw1_valid_request_is_2xx"), "pass");
    assert_eq!(result("stale_marker_stored_bit_exact"), "n/a", "no read URL given");
    // The other formats render the same verdicts.
    let (_, junit) = run(&format!("http://{addr}/api/v1/write"), None, "junit");
    assert!(junit.contains("<testsuite name=\"receiver\"") && junit.contains("<failure"));
    let (_, table) = run(&format!("http://{addr}/api/v1/write"), None, "table");
    assert!(table.contains("MUST failures)"));
}
