//! Config tests: defaults and inheritance, and that every kind of error names file, line and
//! column.

use std::path::Path;
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("agent.yaml"), true, |n| (n == "NODE_NAME").then(|| "node-7".to_owned()))
}

fn err(text: &str) -> ConfigError {
    parse(text).unwrap_err()
}

#[test]
fn defaults_and_inheritance() {
    // G-T06
    let c = parse(
        "global: {scrape_interval: 1m, scrape_timeout: 30s, external_labels: {cluster: eu1}}\n\
         scrape_configs:\n  - {job_name: a, scrape_interval: 15s}\n  - {job_name: b}\n",
    )
    .unwrap();
    assert_eq!(c.jobs[0].timeout, Duration::from_secs(15));
    assert_eq!(c.jobs[1].timeout, Duration::from_secs(30));
    assert_eq!(c.jobs[1].interval, Duration::from_secs(60));
    assert_eq!(c.external_labels.get("cluster"), Some("eu1"));
    let j = &c.jobs[0];
    assert_eq!((j.metrics_path.as_str(), j.scheme.as_str()), ("/metrics", "http"));
    assert!(j.honor_timestamps && !j.honor_labels && j.enable_compression);
    // G-S16 Accept header.
    assert_eq!(
        j.accept,
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    );
    let c = parse("global: {scrape_interval: 5s}\nscrape_configs: [{job_name: x, metric_name_validation_scheme: legacy}]\n").unwrap();
    assert_eq!(c.jobs[0].timeout, Duration::from_secs(5));
    assert!(c.jobs[0].accept.contains("escaping=underscores"));
    // Limits: a job's 0 inherits the global value.
    let c = parse("global: {sample_limit: 100}\nscrape_configs: [{job_name: x, sample_limit: 0}, {job_name: y, sample_limit: 5}]\n").unwrap();
    assert_eq!((c.jobs[0].sample_limit, c.jobs[1].sample_limit), (100, 5));
}

#[test]
fn remote_write_defaults() {
    let c = parse("remote_write:\n  - url: http://r:9201/api/v1/write\n    protobuf_message: io.prometheus.write.v2.Request\n").unwrap();
    let rw = &c.remote_write[0];
    assert_eq!(rw.proto, WriteProto::V2);
    assert!(rw.retry_on_http_429 && rw.fallback_to_rw1);
    assert_eq!(
        (rw.max_samples_per_send, rw.min_backoff, rw.max_backoff),
        (2000, Duration::from_millis(30), Duration::from_secs(5))
    );
    assert_eq!(c.wal.sync_interval, Duration::from_secs(1));
}

#[test]
fn env_expansion_for_daemonsets() {
    let c = parse(
        "scrape_configs:\n  - job_name: pods\n    kubernetes_sd_configs:\n      - role: pod\n        selectors:\n          - {role: pod, field: spec.nodeName=${NODE_NAME}}\n    relabel_configs:\n      - {source_labels: [a], regex: '(.*)', target_label: '${1}', replacement: '$1'}\n",
    )
    .unwrap();
    assert_eq!(c.jobs[0].kubernetes_sd[0].selectors[0].field.as_deref(), Some("spec.nodeName=node-7"));
    let e = err("scrape_configs:\n  - job_name: x\n    static_configs: [{targets: ['${TARGET}']}]\n");
    assert_eq!((e.line, e.file.as_str()), (3, "agent.yaml"));
    assert!(e.msg.contains("TARGET is not set"), "{e}");
    let off = Config::parse("scrape_configs: [{job_name: '${X}'}]\n", Path::new("a.yaml"), false, |_| None)
        .unwrap();
    assert_eq!(off.jobs[0].name, "${X}");
}

#[test]
fn errors_name_file_line_and_column() {
    let e =
        err("global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: x\n    static_configz: []\n");
    assert_eq!((e.line, e.column), (5, 5), "{e}");
    assert!(e.to_string().starts_with("agent.yaml:5:5: ") && e.msg.contains("static_configz"), "{e}");

    let e = err("scrape_configs:\n  - job_name: x\n    scrape_interval: 1.5s\n");
    assert_eq!(e.line, 3, "{e}");
    assert!(e.msg.contains("not a valid duration"), "{e}");

    let e = err(
        "scrape_configs:\n  - job_name: x\n    relabel_configs:\n      - {source_labels: [a], regex: '(', target_label: b}\n",
    );
    assert_eq!(e.line, 4, "{e}");
    assert!(e.msg.contains("invalid regex"), "{e}");

    let e = err(
        "scrape_configs:\n  - job_name: x\n    metric_relabel_configs:\n      - {action: hashmod, target_label: t}\n",
    );
    assert_eq!(e.line, 4, "{e}");
    assert!(e.msg.contains("non-zero modulus"), "{e}");

    let e = err("rule_files: [a.yml]\n");
    assert_eq!(e.line, 1);
    assert!(e.msg.contains("not supported in agent mode"), "{e}");

    let e = err("scrape_configs:\n  - job_name: a\n  - job_name: b\n  - job_name: a\n");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.msg.contains("multiple scrape configs with job name \"a\""), "{e}");

    let e = err("scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 10s\n");
    assert!(e.msg.contains("scrape timeout greater than scrape interval") && e.line == 2, "{e}");

    let e = err("scrape_configs:\n  - job_name: a\n    static_configs: [{targets: ['http://h:9100']}]\n");
    assert!(e.msg.contains("\"http://h:9100\" is not a valid hostname") && e.line == 3, "{e}");

    let e = err("scrape_configs:\n  - job_name: a\n    http_headers:\n      User-Agent: {values: [x]}\n");
    assert!(e.msg.contains("reserved") && e.line == 4, "{e}");

    let e = err("remote_write:\n  - url: http://r/w\n    headers:\n      Content-Type: x\n");
    assert!(e.msg.contains("reserved header") && e.line == 4, "{e}");

    let e = err("scrape_configs:\n  - job_name: a\n    tls_config:\n      min_version: TLS14\n");
    assert!(e.msg.contains("unknown TLS version \"TLS14\"") && e.line == 4, "{e}");
    let e = err("scrape_configs:\n  - job_name: a\n    tls_config: {max_version: TLS11}\n");
    assert!(e.msg.contains("TLS 1.2 is the oldest") && e.line == 3, "{e}");
    let e =
        err("scrape_configs:\n  - job_name: a\n    tls_config: {min_version: TLS13, max_version: TLS12}\n");
    assert!(e.msg.contains("min_version: above max_version TLS12") && e.line == 3, "{e}");
    let e = err("remote_write:\n  - url: https://r/w\n    tls_config:\n      server_name: r.example\n");
    assert!(e.msg.contains("server_name is not supported for remote write") && e.line == 4, "{e}");
    let e = err(
        "scrape_configs:\n  - job_name: a\n    proxy_url: http://p:3128\n    tls_config:\n      server_name: t.example\n",
    );
    assert!(e.msg.contains("not supported for scrapes through a proxy") && e.line == 5, "{e}");

    let e = err("remote_write:\n  - url: http://r/w\n    protobuf_message: foo\n");
    assert!(e.msg.contains("unknown protobuf_message") && e.line == 3, "{e}");

    let e = err("scrape_configs:\n  - job_name: a\n    body_size_limit: 100\n");
    assert!(e.msg.contains("needs a unit") && e.line == 3, "{e}");

    let e = err("scrape_configs:\n  - job_name: a\n    scrape_protocols: [PrometheusProto]\n");
    assert!(e.msg.contains("PrometheusProto is not supported"), "{e}");

    let e = err(
        "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - role: pod\n        selectors: [{role: service}]\n",
    );
    assert!(e.msg.contains("not allowed with role \"pod\"") && e.line == 5, "{e}");

    let e = err(
        "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - role: pod\n        selectors: [{role: pod, field: spec.nodeName}]\n",
    );
    assert!(e.msg.contains("invalid field selector") && e.line == 5, "{e}");

    let e = err(
        "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - role: pod\n        kubeconfig_file: k\n        namespaces: {own_namespace: true}\n",
    );
    assert!(e.msg.contains("own_namespace only works in a cluster"), "{e}");

    let e = err(
        "scrape_configs:\n  - job_name: a\n    basic_auth: {username: u, password: p}\n    authorization: {credentials: t}\n",
    );
    assert!(e.msg.contains("at most one of"), "{e}");

    let e = err("global: {metric_name_validation_scheme: ascii}\n");
    assert!(e.msg.contains("unrecognized ValidationScheme"), "{e}");
}

#[test]
fn sizes() {
    assert_eq!(parse_size("100MB").unwrap(), 100 << 20);
    assert_eq!(parse_size("12B").unwrap(), 12);
    assert_eq!(parse_size("0").unwrap(), 0);
    assert!(parse_size("12").is_err());
    assert!(parse_size("1XB").is_err());
}
