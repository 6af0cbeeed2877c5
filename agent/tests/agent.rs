//! End-to-end tests of the real `ferry-agent` binary: real HTTP targets on loopback (slow,
//! failing, gzip, oversize, flapping, disappearing), the batches it produces (read from
//! `--debug.dump-batches`), the targets API, reload, and configuration errors.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde::Deserialize;
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------

#[test]
fn scrapes_real_targets_with_labels_report_series_and_headers() {
    let t =
        Target::start(Reply::text("# HELP m A gauge.\n# TYPE m gauge\nm{job=\"x\",a=\"1\"} 42\nother 1\n"));
    let cfg = format!(
        "global: {{scrape_interval: 1s, external_labels: {{cluster: c1}}}}\nscrape_configs:\n  - job_name: app\n    static_configs: [{{targets: ['{}'], labels: {{env: test}}}}]\n",
        t.addr
    );
    let a = Agent::start("basic", &cfg);
    let b = a.wait_for(10 * SEC, |b| has_instance(b, &t.addr));
    assert_eq!(up(&b), 1.0);
    let m = sample(&b, "m").unwrap();
    assert_eq!(m["v"], 42.0);
    assert_eq!(m["labels"]["job"], "app");
    assert_eq!(m["labels"]["exported_job"], "x");
    assert_eq!(m["labels"]["env"], "test");
    assert_eq!(m["labels"]["instance"], t.addr);
    for name in [
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ] {
        assert!(sample(&b, name).is_some(), "{name}");
    }
    assert_eq!(sample(&b, "scrape_samples_scraped").unwrap()["v"], 2.0);
    assert_eq!(b["metadata"][0]["family"], "m");
    let req = t.requests.lock().unwrap()[0].clone();
    assert!(
        req["accept"].starts_with("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"),
        "{req:?}"
    );
    assert_eq!(req["accept-encoding"], "gzip");
    assert_eq!(req["x-prometheus-scrape-timeout-seconds"], "1");
    assert!(req["user-agent"].starts_with("ferry-agent/"));
    // The targets API, in Prometheus' shape.
    let (status, body) = http(&a.web, "GET", "/api/v1/targets");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let at = &v["data"]["activeTargets"][0];
    assert_eq!(at["scrapeUrl"], format!("http://{}/metrics", t.addr));
    assert_eq!(at["health"], "up");
    assert_eq!(at["labels"]["env"], "test");
    assert_eq!(at["discoveredLabels"]["__address__"], t.addr);
    assert_eq!(at["scrapeInterval"], "1s");
    let (_, metrics) = http(&a.web, "GET", "/metrics");
    assert!(metrics.contains("ferry_targets{job=\"app\",health=\"up\"} 1"), "{metrics}");
}

#[test]
fn failing_slow_gzip_and_oversize_targets() {
    let ok = "a 1\nb 2\n";
    let failing = Target::start(Reply::text(ok));
    let slow = Target::start(Reply { delay: Duration::from_millis(1500), ..Reply::text(ok) });
    let gz = Target::start(Reply { gzip: true, ..Reply::text(ok) });
    let big = Target::start(Reply { gzip: true, ..Reply::text(&"x 1\n".repeat(100)) });
    let cfg = format!(
        "global: {{scrape_interval: 2s, scrape_timeout: 1s}}\nscrape_configs:\n  - job_name: t\n    static_configs: [{{targets: ['{}', '{}', '{}']}}]\n  - job_name: big\n    body_size_limit: 100B\n    static_configs: [{{targets: ['{}']}}]\n",
        failing.addr, slow.addr, gz.addr, big.addr
    );
    let a = Agent::start("failing", &cfg);
    let mut seen = HashMap::new();
    let deadline = Instant::now() + 20 * SEC;
    // First round: failing serves fine, then turns to 500 and must stale a and b.
    while seen.len() < 4 && Instant::now() < deadline {
        let b = a.next_batch(10 * SEC);
        let inst = sample(&b, "up").unwrap()["labels"]["instance"].as_str().unwrap().to_owned();
        seen.entry(inst).or_insert(b);
    }
    assert_eq!(up(&seen[&failing.addr]), 1.0);
    assert_eq!(up(&seen[&gz.addr]), 1.0, "gzip bodies are decoded");
    assert_eq!(sample(&seen[&gz.addr], "b").unwrap()["v"], 2.0);
    assert_eq!(up(&seen[&slow.addr]), 0.0);
    assert!(seen[&slow.addr]["error"].as_str().unwrap().contains("deadline"), "{}", seen[&slow.addr]);
    assert_eq!(up(&seen[&big.addr]), 0.0);
    assert_eq!(seen[&big.addr]["error"], "body size limit exceeded");
    failing.set(Reply::status(500));
    let b = a.wait_for(10 * SEC, |b| has_instance(b, &failing.addr));
    assert_eq!(up(&b), 0.0);
    assert_eq!(b["error"], "server returned HTTP status 500 Internal Server Error");
    let stale: Vec<&str> = b["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["v"] == "StaleNaN")
        .map(|s| s["labels"]["__name__"].as_str().unwrap())
        .collect();
    assert_eq!(stale, ["a", "b"]);
    // Flapping back: values return, no markers.
    failing.set(Reply::text("a 3\nb 4\n"));
    let b = a.wait_for(10 * SEC, |b| has_instance(b, &failing.addr) && up(b) == 1.0);
    assert_eq!(sample(&b, "a").unwrap()["v"], 3.0);
    assert!(b["samples"].as_array().unwrap().iter().all(|s| s["v"] != "StaleNaN"));
}

#[test]
fn disappearing_target_gets_end_of_run_markers_and_reload_keeps_unchanged_jobs() {
    let t1 = Target::start(Reply::text("gone_soon 1\n"));
    let t2 = Target::start(Reply::text("stays 1\n"));
    let dir = tmpdir("filesd");
    let sd = dir.join("targets.json");
    std::fs::write(
        &sd,
        format!(r#"[{{"targets": ["{}", "{}"], "labels": {{"team": "a"}}}}]"#, t1.addr, t2.addr),
    )
    .unwrap();
    let cfg = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: files\n    file_sd_configs: [{{files: ['{}']}}]\n",
        sd.display()
    );
    let a = Agent::start("eor", &cfg);
    let b = a.wait_for(10 * SEC, |b| has_instance(b, &t1.addr));
    assert_eq!(sample(&b, "gone_soon").unwrap()["labels"]["team"], "a");
    std::fs::write(&sd, format!(r#"[{{"targets": ["{}"], "labels": {{"team": "a"}}}}]"#, t2.addr)).unwrap();
    // ~2 intervals later: stale markers for the series and the five report series.
    let b =
        a.wait_for(15 * SEC, |b| has_instance(b, &t1.addr) && sample(b, "up").unwrap()["v"] == "StaleNaN");
    let names: Vec<&str> =
        b["samples"].as_array().unwrap().iter().map(|s| s["labels"]["__name__"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "gone_soon",
            "up",
            "scrape_duration_seconds",
            "scrape_samples_scraped",
            "scrape_samples_post_metric_relabeling",
            "scrape_series_added"
        ]
    );
    assert!(b["samples"].as_array().unwrap().iter().all(|s| s["v"] == "StaleNaN"));

    // Reload with the same job config: the remaining loop keeps its state (no new series
    // definitions, no stale markers); a broken config is refused and the old one stays.
    let (status, _) = http(&a.web, "POST", "/-/reload");
    assert_eq!(status, 200);
    let after = a.wait_for(10 * SEC, |b| has_instance(b, &t2.addr));
    let after2 = a.wait_for(10 * SEC, |b| has_instance(b, &t2.addr));
    for b in [&after, &after2] {
        assert_eq!(b["new_series"], 0, "{b}");
        assert!(b["samples"].as_array().unwrap().iter().all(|s| s["v"] != "StaleNaN"), "{b}");
    }
    std::fs::write(a.dir.join("agent.yaml"), "scrape_configs:\n  - job_name: files\n    bogus: 1\n").unwrap();
    let (status, body) = http(&a.web, "POST", "/-/reload");
    assert_eq!(status, 500);
    assert!(body.contains("agent.yaml:3:5") && body.contains("bogus"), "{body}");
    a.wait_for(10 * SEC, |b| has_instance(b, &t2.addr));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn openmetrics_and_content_type_fallback() {
    let om = Target::start(Reply {
        content_type: Some("application/openmetrics-text; version=1.0.0"),
        ..Reply::text("# TYPE c counter\nc_total 5 1700000000.5 # {trace_id=\"t1\"} 1\n# EOF\n")
    });
    let bare = Target::start(Reply { content_type: None, ..Reply::text("n 7\n") });
    let cfg = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: om\n    static_configs: [{{targets: ['{}']}}]\n  - job_name: bare\n    static_configs: [{{targets: ['{}']}}]\n  - job_name: fallback\n    fallback_scrape_protocol: PrometheusText0.0.4\n    static_configs: [{{targets: ['{}']}}]\n",
        om.addr, bare.addr, bare.addr
    );
    let a = Agent::start("om", &cfg);
    let b = a.wait_for(10 * SEC, |b| sample(b, "up").is_some_and(|s| s["labels"]["job"] == "om"));
    assert_eq!(up(&b), 1.0, "{b}");
    let c = sample(&b, "c_total").unwrap();
    assert_eq!((c["t"].as_i64(), c["v"].as_f64()), (Some(1_700_000_000_500), Some(5.0)));
    assert_eq!(b["exemplars"], 1);
    let b = a.wait_for(10 * SEC, |b| sample(b, "up").is_some_and(|s| s["labels"]["job"] == "bare"));
    assert_eq!(up(&b), 0.0);
    assert!(b["error"].as_str().unwrap().contains("blank Content-Type"), "{b}");
    let b = a.wait_for(10 * SEC, |b| sample(b, "up").is_some_and(|s| s["labels"]["job"] == "fallback"));
    assert_eq!(up(&b), 1.0);
    assert_eq!(sample(&b, "n").unwrap()["v"], 7.0);
}

#[test]
fn config_errors_and_check() {
    let dir = tmpdir("cfg");
    let p = dir.join("bad.yaml");
    std::fs::write(&p, "global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: x\n    relabel_configs:\n      - {source_labels: [a], regex: '(', target_label: b}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .arg(format!("--config.file={}", p.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:6:", p.display())) && err.contains("invalid regex"), "{err}");
    let good = dir.join("good.yaml");
    std::fs::write(&good, "scrape_configs: [{job_name: x, static_configs: [{targets: ['h:1']}]}]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .args([format!("--config.file={}", good.display()), "--config.check".into()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 scrape jobs"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn http_sd_finds_targets() {
    let t = Target::start(Reply::text("via_http_sd 1\n"));
    let sd = Target::start(Reply {
        content_type: Some("application/json"),
        ..Reply::text(&format!(r#"[{{"targets": ["{}"], "labels": {{"zone": "z1"}}}}]"#, t.addr))
    });
    let cfg = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: httpsd\n    http_sd_configs: [{{url: 'http://{}/targets', refresh_interval: 1s}}]\n",
        sd.addr
    );
    let a = Agent::start("httpsd", &cfg);
    let b = a.wait_for(15 * SEC, |b| sample(b, "via_http_sd").is_some());
    let s = sample(&b, "via_http_sd").unwrap();
    assert_eq!(s["labels"]["zone"], "z1");
    assert_eq!(s["labels"]["instance"], t.addr);
}

/// Every agent config shipped in packaging/ loads, with the environment its deployment
/// provides (downward-API NODE_NAME/NODE_IP, the sharding variables, the edge env file).
#[test]
fn packaged_configs_pass_config_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cases: [(&str, &[(&str, &str)]); 4] = [
        (
            "packaging/kubernetes/overlays/daemonset/agent.yaml",
            &[("NODE_NAME", "node-1"), ("NODE_IP", "10.0.0.1")],
        ),
        ("packaging/kubernetes/overlays/sharded/agent.yaml", &[("SHARD", "0"), ("SHARDS", "3")]),
        ("packaging/systemd/agent.yaml", &[("FERRY_REMOTE_URL", "https://m.example/api/v1/write")]),
        ("config.example.yaml", &[]),
    ];
    for (file, env) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
            .arg(format!("--config.file={}", root.join(file).display()))
            .arg("--config.check")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A minimal kustomize for the features `packaging/kubernetes` uses: `resources` (files and
/// directories), `namespace`, and `configMapGenerator` with `files` (`key=path` or `path`).
/// Generated ConfigMaps keep their plain names (kustomize adds a content hash).
fn kustomize(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let k: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap()).unwrap();
    let mut out = Vec::new();
    for r in k["resources"].as_array().into_iter().flatten() {
        let p = dir.join(r.as_str().unwrap());
        if p.is_dir() {
            out.extend(kustomize(&p));
        } else {
            let text = std::fs::read_to_string(&p).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v = serde_json::Value::deserialize(doc).unwrap();
                if !v.is_null() {
                    out.push(v);
                }
            }
        }
    }
    for g in k["configMapGenerator"].as_array().into_iter().flatten() {
        let mut data = serde_json::Map::new();
        for f in g["files"].as_array().unwrap() {
            let f = f.as_str().unwrap();
            let (key, path) = f.split_once('=').unwrap_or((f.rsplit('/').next().unwrap(), f));
            data.insert(key.into(), std::fs::read_to_string(dir.join(path)).unwrap().into());
        }
        out.push(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": g["name"]}, "data": data}));
    }
    if let Some(ns) = k["namespace"].as_str() {
        for o in &mut out {
            let cluster_scoped =
                matches!(o["kind"].as_str(), Some("ClusterRole" | "ClusterRoleBinding" | "Namespace"));
            if !cluster_scoped {
                o["metadata"]["namespace"] = ns.into();
            }
            for s in o["subjects"].as_array_mut().into_iter().flatten() {
                if s["kind"] == "ServiceAccount" {
                    s["namespace"] = ns.into();
                }
            }
        }
    }
    out
}

/// Paths of `orig` that do not survive a trip through the typed value `typed` (fields the
/// Kubernetes type does not know, or values it reads differently).
fn lost_fields(orig: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, typed) {
        (Value::Object(o), Value::Object(t)) => {
            for (k, v) in o {
                match t.get(k) {
                    Some(tv) => lost_fields(v, tv, &format!("{path}.{k}"), out),
                    None if v.is_null() => {}
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(o), Value::Array(t)) if o.len() == t.len() => {
            for (i, (a, b)) in o.iter().zip(t).enumerate() {
                lost_fields(a, b, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

/// Fields of a manifest object that its Kubernetes type (k8s-openapi) does not accept.
fn schema_errors(o: &serde_json::Value) -> Vec<String> {
    use k8s_openapi::api::{apps, core, policy, rbac};
    fn check<T: serde::de::DeserializeOwned + serde::Serialize>(o: &serde_json::Value) -> Vec<String> {
        match serde_json::from_value::<T>(o.clone()) {
            Err(e) => vec![e.to_string()],
            Ok(t) => {
                let mut out = Vec::new();
                lost_fields(o, &serde_json::to_value(t).unwrap(), "", &mut out);
                out
            }
        }
    }
    match o["kind"].as_str().unwrap_or("") {
        "ServiceAccount" => check::<core::v1::ServiceAccount>(o),
        "ConfigMap" => check::<core::v1::ConfigMap>(o),
        "Service" => check::<core::v1::Service>(o),
        "PersistentVolumeClaim" => check::<core::v1::PersistentVolumeClaim>(o),
        "DaemonSet" => check::<apps::v1::DaemonSet>(o),
        "StatefulSet" => check::<apps::v1::StatefulSet>(o),
        "Deployment" => check::<apps::v1::Deployment>(o),
        "ClusterRole" => check::<rbac::v1::ClusterRole>(o),
        "ClusterRoleBinding" => check::<rbac::v1::ClusterRoleBinding>(o),
        "PodDisruptionBudget" => check::<policy::v1::PodDisruptionBudget>(o),
        other => vec![format!("kind {other:?} is not checked by this test; add it")],
    }
}

#[test]
fn kubernetes_manifests_render_match_the_schema_and_carry_valid_agent_configs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let overlays = root.join("packaging/kubernetes/overlays");
    let mut names: Vec<_> = std::fs::read_dir(&overlays).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    // kubectl, when installed, renders too; its objects must match ours kind for kind.
    let kubectl =
        Command::new("kubectl").args(["version", "--client"]).output().is_ok_and(|o| o.status.success());
    for dir in names {
        let objs = kustomize(&dir);
        let overlay = dir.file_name().unwrap().to_string_lossy().into_owned();
        if kubectl {
            let out = Command::new("kubectl").arg("kustomize").arg(&dir).output().unwrap();
            assert!(out.status.success(), "{overlay}: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8(out.stdout).unwrap();
            let theirs: Vec<Value> =
                serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).collect();
            let kinds = |v: &[Value]| {
                let mut k: Vec<String> = v.iter().map(|o| o["kind"].as_str().unwrap().to_owned()).collect();
                k.sort();
                k
            };
            assert_eq!(kinds(&objs), kinds(&theirs), "{overlay}: our renderer and kubectl kustomize differ");
            for o in &theirs {
                let errors = schema_errors(o);
                assert!(
                    errors.is_empty(),
                    "{overlay} (kubectl) {} {}: {errors:?}",
                    o["kind"],
                    o["metadata"]["name"]
                );
            }
        }
        for o in &objs {
            let errors = schema_errors(o);
            assert!(errors.is_empty(), "{overlay} {} {}: {errors:?}", o["kind"], o["metadata"]["name"]);
        }
        // Every agent config in a ConfigMap passes --config.check with the environment its
        // workload gives it (downward-API values replaced by placeholders).
        for cm in objs.iter().filter(|o| o["kind"] == "ConfigMap") {
            let Some(config) = cm["data"]["agent.yaml"].as_str() else { continue };
            let name = cm["metadata"]["name"].as_str().unwrap();
            let workload = objs
                .iter()
                .find(|o| {
                    o["spec"]["template"]["spec"]["volumes"]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|v| v["configMap"]["name"] == name))
                })
                .unwrap_or_else(|| panic!("{overlay}: no workload mounts ConfigMap {name}"));
            let env: Vec<(String, String)> = workload["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let v = e["value"].as_str().unwrap_or("0");
                    (e["name"].as_str().unwrap().to_owned(), v.to_owned())
                })
                .collect();
            let dir = tmpdir("manifest-config");
            std::fs::write(dir.join("agent.yaml"), config).unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
                .arg(format!("--config.file={}", dir.join("agent.yaml").display()))
                .arg("--config.check")
                .envs(env)
                .output()
                .unwrap();
            assert!(out.status.success(), "{overlay} {name}: {}", String::from_utf8_lossy(&out.stderr));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// `cargo deb -p ferry-agent` packages the binaries this test run built (linked into a
/// scratch target dir as `release`), the units, environment files and default configs; the
/// unpacked binaries run and the packaged agent config passes `--config.check`. Needs
/// cargo-deb and dpkg-deb: `.ci/run` installs cargo-deb and sets FERRY_REQUIRE_DEB=1 so that a
/// missing tool fails there instead of skipping.
#[test]
fn deb_package_carries_binaries_units_and_configs() {
    let required = std::env::var_os("FERRY_REQUIRE_DEB").is_some();
    let agent_bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_ferry-agent"));
    let receiver_bin = agent_bin.with_file_name("ferry-receiver");
    let tools = Command::new("cargo").args(["deb", "--version"]).output().is_ok_and(|o| o.status.success())
        && Command::new("dpkg-deb").arg("--version").output().is_ok_and(|o| o.status.success());
    if !tools || !receiver_bin.exists() {
        assert!(!required, "cargo-deb, dpkg-deb or {} missing", receiver_bin.display());
        eprintln!("skipping: needs cargo-deb, dpkg-deb and a built ferry-receiver (cargo test --workspace)");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tmpdir("deb");
    let release = dir.join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(&agent_bin, release.join("ferry-agent")).unwrap();
    std::fs::copy(&receiver_bin, release.join("ferry-receiver")).unwrap();
    let deb = dir.join("ferry.deb");
    let out = Command::new("cargo")
        .current_dir(root)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .args(["deb", "-p", "ferry-agent", "--no-build", "--fast", "-o"])
        .arg(&deb)
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo deb: {}", String::from_utf8_lossy(&out.stderr));

    let field = |name: &str| {
        let o = Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg(name).output().unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(field("Package"), "ferry");
    assert!(field("Depends").contains("libc6"), "{}", field("Depends"));
    let listing = Command::new("dpkg-deb").arg("-c").arg(&deb).output().unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    for path in [
        "./usr/bin/ferry-agent",
        "./usr/bin/ferry-receiver",
        "./lib/systemd/system/ferry-agent.service",
        "./lib/systemd/system/ferry-receiver.service",
        "./etc/ferry/agent.yaml",
        "./etc/ferry/receiver.yaml",
        "./etc/default/ferry-agent",
        "./etc/default/ferry-receiver",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(path)), "{path} missing from:\n{listing}");
    }
    let control = dir.join("control");
    assert!(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control).status().unwrap().success());
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    for c in ["/etc/ferry/agent.yaml", "/etc/ferry/receiver.yaml", "/etc/default/ferry-agent"] {
        assert!(conffiles.lines().any(|l| l == c), "{c} is not a conffile: {conffiles}");
    }

    // Unpack and run what was packaged: the agent checks the packaged config with the
    // packaged environment file; the receiver starts on the packaged config.
    let fs = dir.join("root");
    assert!(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&fs).status().unwrap().success());
    let env_file = std::fs::read_to_string(fs.join("etc/default/ferry-agent")).unwrap();
    let env: Vec<(String, String)> = env_file
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect();
    let out = Command::new(fs.join("usr/bin/ferry-agent"))
        .arg(format!("--config.file={}", fs.join("etc/ferry/agent.yaml").display()))
        .arg("--config.check")
        .envs(env)
        .output()
        .unwrap();
    assert!(out.status.success(), "packaged agent config: {}", String::from_utf8_lossy(&out.stderr));
    let unit = std::fs::read_to_string(fs.join("lib/systemd/system/ferry-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/ferry-agent") && unit.contains("ProtectSystem=strict"));
    let web = format!("127.0.0.1:{}", free_port());
    let mut receiver = Command::new(fs.join("usr/bin/ferry-receiver"))
        .arg(format!("--config.file={}", fs.join("etc/ferry/receiver.yaml").display()))
        .arg(format!("--storage.path={}", dir.join("store").display()))
        .arg(format!("--web.listen-address={web}"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(&web, "GET", "/-/ready").0 != 200 {
        assert!(Instant::now() < deadline, "the packaged receiver did not become ready");
        assert!(receiver.try_wait().unwrap().is_none(), "the packaged receiver exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = receiver.kill();
    let _ = receiver.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
