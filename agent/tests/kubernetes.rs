//! Kubernetes discovery against a test API server speaking the real list/watch protocol:
//! the reference's golden cases per role (G-K01..G-K08), the watch lifecycle (410 Gone,
//! dropped connections, bookmarks, selectors on list and watch, one shared watch per
//! resource across jobs), and the real binary scraping pods it discovered, with stale
//! markers after a pod is deleted.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::kube_api::{KubeApi, pod};
use common::*;
use ferry_agent::config::KubernetesSdConfig;
use ferry_agent::discovery::kubernetes;
use ferry_agent::scrape::manager::Update;
use ferry_agent::scrape::target::TargetGroup;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// Labels from `[name, value]` pairs; names not starting with `__` get `__meta_kubernetes_`.
fn ls(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| {
            let k = if k.starts_with("__") || *k == "instance" {
                (*k).to_owned()
            } else {
                format!("__meta_kubernetes_{k}")
            };
            (k, (*v).to_owned())
        })
        .collect()
}

fn with(base: &BTreeMap<String, String>, more: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m = base.clone();
    m.extend(ls(more));
    m
}

/// A provider of `role` for job `job` reading the test server through a kubeconfig.
struct Provider {
    rx: mpsc::Receiver<Update>,
    _stop: watch::Sender<bool>,
}

impl Provider {
    fn start(rt: &tokio::runtime::Runtime, dir: &Path, job: &str, yaml: &str) -> Provider {
        let cfg: KubernetesSdConfig = serde_yaml::from_str(yaml).unwrap();
        let (tx, rx) = mpsc::channel(16);
        let (stop, stop_rx) = watch::channel(false);
        rt.spawn(kubernetes::run(job.into(), "kubernetes/0".into(), cfg, dir.to_owned(), tx, stop_rx));
        Provider { rx, _stop: stop }
    }

    /// The next full set of groups, by source.
    fn next(&mut self, rt: &tokio::runtime::Runtime) -> BTreeMap<String, TargetGroup> {
        let u = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(15), self.rx.recv()).await })
            .expect("no discovery update in time")
            .expect("provider ended");
        u.groups.into_iter().map(|g| (g.source.clone(), g)).collect()
    }

    /// Updates until `pred` holds.
    fn until(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mut pred: impl FnMut(&BTreeMap<String, TargetGroup>) -> bool,
    ) -> BTreeMap<String, TargetGroup> {
        loop {
            let g = self.next(rt);
            if pred(&g) {
                return g;
            }
        }
    }
}

fn setup(tag: &str) -> (KubeApi, std::path::PathBuf, tokio::runtime::Runtime) {
    let api = KubeApi::start();
    let dir = tmpdir(tag);
    std::fs::write(dir.join("kubeconfig"), api.kubeconfig()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    (api, dir, rt)
}

/// The Pod of reference §6.6.
fn reference_pod() -> Value {
    json!({"apiVersion":"v1","kind":"Pod",
     "metadata":{"name":"web-7d9c","namespace":"default","uid":"0b4e",
       "labels":{"app.kubernetes.io/name":"web"},
       "annotations":{"prometheus.io/scrape":"true","prometheus.io/port":"9102"},
       "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-7d9c5b","uid":"u","controller":true}]},
     "spec":{"nodeName":"node-1",
       "containers":[{"name":"app","image":"nginx:1.27","ports":[{"name":"http","containerPort":8080,"protocol":"TCP"}]},
                     {"name":"sidecar","image":"envoy:1.30"}],
       "initContainers":[{"name":"init","image":"busybox:1.36"}]},
     "status":{"phase":"Running","podIP":"10.1.2.3","hostIP":"192.168.1.10",
       "conditions":[{"type":"Ready","status":"True"}],
       "containerStatuses":[{"name":"app","containerID":"containerd://aaa"},{"name":"sidecar","containerID":"containerd://bbb"}],
       "initContainerStatuses":[{"name":"init","containerID":"containerd://ccc"}]}})
}

/// G-K01's group labels minus `namespace` (what endpoint roles attach).
fn reference_pod_labels() -> BTreeMap<String, String> {
    ls(&[
        ("pod_name", "web-7d9c"),
        ("pod_ip", "10.1.2.3"),
        ("pod_ready", "true"),
        ("pod_phase", "Running"),
        ("pod_node_name", "node-1"),
        ("pod_host_ip", "192.168.1.10"),
        ("pod_uid", "0b4e"),
        ("pod_controller_kind", "ReplicaSet"),
        ("pod_controller_name", "web-7d9c5b"),
        ("pod_label_app_kubernetes_io_name", "web"),
        ("pod_labelpresent_app_kubernetes_io_name", "true"),
        ("pod_annotation_prometheus_io_scrape", "true"),
        ("pod_annotationpresent_prometheus_io_scrape", "true"),
        ("pod_annotation_prometheus_io_port", "9102"),
        ("pod_annotationpresent_prometheus_io_port", "true"),
    ])
}

const KUBECONFIG: &str = "kubeconfig_file: kubeconfig\n";

#[test]
fn pod_role_matches_reference_and_follows_changes() {
    let (api, dir, rt) = setup("k8s-pod");
    api.apply("pods", reference_pod());
    // G-K07: each character outside [a-zA-Z0-9_] becomes one `_`.
    let mut odd = pod("other", "odd", "node-2", "10.9.9.9", 0);
    odd["metadata"]["labels"] = json!({"é-x": "v", "helm.sh/chart": "c-1"});
    api.apply("pods", odd);
    let mut p = Provider::start(&rt, &dir, "pods", &format!("role: pod\n{KUBECONFIG}"));
    let groups = p.next(&rt);

    // G-K01
    let g = &groups["pod/default/web-7d9c"];
    assert_eq!(g.labels, with(&reference_pod_labels(), &[("namespace", "default")]));
    let c = |name: &str, id: &str, image: &str, init: &str| {
        ls(&[
            ("pod_container_name", name),
            ("pod_container_id", id),
            ("pod_container_image", image),
            ("pod_container_init", init),
        ])
    };
    let expected = vec![
        with(
            &c("app", "containerd://aaa", "nginx:1.27", "false"),
            &[
                ("__address__", "10.1.2.3:8080"),
                ("pod_container_port_name", "http"),
                ("pod_container_port_number", "8080"),
                ("pod_container_port_protocol", "TCP"),
            ],
        ),
        with(&c("sidecar", "containerd://bbb", "envoy:1.30", "false"), &[("__address__", "10.1.2.3")]),
        with(&c("init", "containerd://ccc", "busybox:1.36", "true"), &[("__address__", "10.1.2.3")]),
    ];
    assert_eq!(g.targets, expected);

    // G-K07
    let odd = &groups["pod/other/odd"].labels;
    assert_eq!(odd["__meta_kubernetes_pod_label___x"], "v");
    assert_eq!(odd["__meta_kubernetes_pod_label_helm_sh_chart"], "c-1");

    // G-K02: without an IP the group stays, with no targets.
    let mut no_ip = reference_pod();
    no_ip["status"]["podIP"] = json!("");
    api.apply("pods", no_ip);
    let groups = p.until(&rt, |g| g["pod/default/web-7d9c"].targets.is_empty());
    assert!(groups["pod/default/web-7d9c"].labels.is_empty());
    // Deleted: the group is gone from the provider's set.
    api.delete("pods", "default", "web-7d9c");
    let groups = p.until(&rt, |g| !g.contains_key("pod/default/web-7d9c"));
    assert!(groups.contains_key("pod/other/odd"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn endpointslice_service_node_and_ingress_roles_match_reference() {
    let (api, dir, rt) = setup("k8s-roles");
    api.apply("pods", reference_pod());
    api.apply(
        "services",
        json!({"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
               "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "grpc", "port": 9090, "protocol": "TCP"}]}}),
    );
    api.apply(
        "endpointslices",
        json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
         "metadata":{"name":"web-x7k2p","namespace":"default",
           "labels":{"kubernetes.io/service-name":"web","endpointslice.kubernetes.io/managed-by":"endpointslice-controller.k8s.io"}},
         "addressType":"IPv4",
         "endpoints":[
           {"addresses":["10.1.2.3"],"conditions":{"ready":true,"serving":true,"terminating":false},
            "nodeName":"node-1","zone":"eu-west-1a","targetRef":{"kind":"Pod","namespace":"default","name":"web-7d9c","uid":"0b4e"}},
           {"addresses":["10.1.5.9"],"conditions":{"ready":false,"serving":true,"terminating":true},
            "nodeName":"node-2","targetRef":{"kind":"Pod","namespace":"default","name":"web-k2j1"}}],
         "ports":[{"name":"http","protocol":"TCP","port":8080,"appProtocol":"http"}]}),
    );
    api.apply(
        "nodes",
        json!({"metadata": {"name": "node-1"}, "spec": {"providerID": "aws:///eu-west-1a/i-0abc"},
               "status": {"addresses": [{"type": "Hostname", "address": "node-1"}, {"type": "InternalIP", "address": "192.168.1.10"},
                                        {"type": "ExternalIP", "address": "34.1.2.3"}],
                          "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                          "conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}]}}),
    );
    api.apply(
        "ingresses",
        json!({"metadata": {"name": "api", "namespace": "default"},
               "spec": {"tls": [{"hosts": ["*.example.com"]}],
                        "rules": [{"host": "api.example.com", "http": {"paths": [{"path": "/v1"}, {"path": ""}]}},
                                  {"host": "a.b.example.com"}]}}),
    );

    // G-K03
    let mut p = Provider::start(&rt, &dir, "slices", &format!("role: endpointslice\n{KUBECONFIG}"));
    let g = p.next(&rt).remove("endpointslice/default/web-x7k2p").unwrap();
    assert_eq!(
        g.labels,
        ls(&[
            ("namespace", "default"),
            ("endpointslice_address_type", "IPv4"),
            ("endpointslice_name", "web-x7k2p"),
            ("endpointslice_label_kubernetes_io_service_name", "web"),
            ("endpointslice_labelpresent_kubernetes_io_service_name", "true"),
            ("endpointslice_label_endpointslice_kubernetes_io_managed_by", "endpointslice-controller.k8s.io"),
            ("endpointslice_labelpresent_endpointslice_kubernetes_io_managed_by", "true"),
            ("service_name", "web"),
            ("service_label_app", "web"),
            ("service_labelpresent_app", "true"),
        ])
    );
    let port = ls(&[
        ("endpointslice_port_name", "http"),
        ("endpointslice_port_protocol", "TCP"),
        ("endpointslice_port", "8080"),
        ("endpointslice_port_app_protocol", "http"),
    ]);
    let mut t1 = with(
        &port,
        &[
            ("__address__", "10.1.2.3:8080"),
            ("endpointslice_endpoint_conditions_ready", "true"),
            ("endpointslice_endpoint_conditions_serving", "true"),
            ("endpointslice_endpoint_conditions_terminating", "false"),
            ("endpointslice_address_target_kind", "Pod"),
            ("endpointslice_address_target_name", "web-7d9c"),
            ("endpointslice_endpoint_node_name", "node-1"),
            ("endpointslice_endpoint_zone", "eu-west-1a"),
            ("pod_container_name", "app"),
            ("pod_container_image", "nginx:1.27"),
            ("pod_container_port_name", "http"),
            ("pod_container_port_number", "8080"),
            ("pod_container_port_protocol", "TCP"),
            ("pod_container_init", "false"),
        ],
    );
    t1.extend(reference_pod_labels());
    let t2 = with(
        &port,
        &[
            ("__address__", "10.1.5.9:8080"),
            ("endpointslice_endpoint_conditions_ready", "false"),
            ("endpointslice_endpoint_conditions_serving", "true"),
            ("endpointslice_endpoint_conditions_terminating", "true"),
            ("endpointslice_address_target_kind", "Pod"),
            ("endpointslice_address_target_name", "web-k2j1"),
            ("endpointslice_endpoint_node_name", "node-2"),
        ],
    );
    assert_eq!(g.targets, vec![t1, t2], "no extra container-port targets: 8080 is matched");

    // G-K04
    let mut p = Provider::start(&rt, &dir, "nodes", &format!("role: node\n{KUBECONFIG}"));
    let g = p.next(&rt).remove("node/node-1").unwrap();
    assert_eq!(
        g.labels,
        ls(&[
            ("node_name", "node-1"),
            ("node_provider_id", "aws:///eu-west-1a/i-0abc"),
            ("node_condition_ready", "true"),
            ("node_condition_memorypressure", "false"),
        ])
    );
    assert_eq!(
        g.targets,
        vec![ls(&[
            ("__address__", "192.168.1.10:10250"),
            ("instance", "node-1"),
            ("node_address_InternalIP", "192.168.1.10"),
            ("node_address_ExternalIP", "34.1.2.3"),
            ("node_address_Hostname", "node-1"),
        ])]
    );

    // G-K05
    let mut p = Provider::start(&rt, &dir, "services", &format!("role: service\n{KUBECONFIG}"));
    let g = p.next(&rt).remove("svc/default/web").unwrap();
    assert_eq!(
        g.labels,
        ls(&[
            ("namespace", "default"),
            ("service_name", "web"),
            ("service_label_app", "web"),
            ("service_labelpresent_app", "true")
        ])
    );
    let svc = |addr: &str, name: &str, port: &str| {
        ls(&[
            ("__address__", addr),
            ("service_port_name", name),
            ("service_port_number", port),
            ("service_port_protocol", "TCP"),
            ("service_type", "ClusterIP"),
            ("service_cluster_ip", "10.96.0.10"),
        ])
    };
    assert_eq!(
        g.targets,
        vec![svc("web.default.svc:80", "http", "80"), svc("web.default.svc:9090", "grpc", "9090")]
    );

    // G-K06
    let mut p = Provider::start(&rt, &dir, "ingresses", &format!("role: ingress\n{KUBECONFIG}"));
    let g = p.next(&rt).remove("ingress/default/api").unwrap();
    assert_eq!(g.labels, ls(&[("namespace", "default"), ("ingress_name", "api")]));
    let ing = |host: &str, scheme: &str, path: &str| {
        ls(&[
            ("__address__", host),
            ("ingress_scheme", scheme),
            ("ingress_host", host),
            ("ingress_path", path),
        ])
    };
    assert_eq!(
        g.targets,
        vec![
            ing("api.example.com", "https", "/v1"),
            ing("api.example.com", "https", "/"),
            ing("a.b.example.com", "http", "/"),
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn endpoints_role_enriches_with_pods_and_adds_unmatched_ports() {
    let (api, dir, rt) = setup("k8s-endpoints");
    let mut p2 = pod("default", "db-0", "node-1", "10.0.0.7", 5432);
    p2["spec"]["containers"][0]["ports"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "metrics", "containerPort": 9187, "protocol": "TCP"}));
    api.apply("pods", p2);
    api.apply(
        "endpoints",
        json!({"metadata": {"name": "db", "namespace": "default"},
               "subsets": [{"addresses": [{"ip": "10.0.0.7", "nodeName": "node-1", "targetRef": {"kind": "Pod", "namespace": "default", "name": "db-0"}}],
                            "notReadyAddresses": [{"ip": "10.0.0.8", "hostname": "db-1"}],
                            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]}),
    );
    // Objects in other namespaces are never asked for.
    api.apply("endpoints", json!({"metadata": {"name": "db", "namespace": "other"}, "subsets": []}));
    let mut p = Provider::start(
        &rt,
        &dir,
        "eps",
        &format!("role: endpoints\n{KUBECONFIG}namespaces: {{names: [default]}}\n"),
    );
    let mut groups = p.next(&rt);
    assert!(!groups.contains_key("endpoints/other/db"));
    let paths: std::collections::BTreeSet<String> = api.requests().into_iter().map(|r| r.path).collect();
    for res in ["endpoints", "services", "pods"] {
        assert!(paths.contains(&format!("/api/v1/namespaces/default/{res}")), "{paths:?}");
        assert!(!paths.contains(&format!("/api/v1/{res}")), "{paths:?}");
    }
    let g = groups.remove("endpoints/default/db").unwrap();
    assert_eq!(g.labels, ls(&[("namespace", "default"), ("endpoints_name", "db")]));
    let addrs: Vec<&str> = g.targets.iter().map(|t| t["__address__"].as_str()).collect();
    assert_eq!(addrs, ["10.0.0.7:5432", "10.0.0.8:5432", "10.0.0.7:9187"]);
    let t = &g.targets[0];
    assert_eq!(t["__meta_kubernetes_endpoint_ready"], "true");
    assert_eq!(t["__meta_kubernetes_endpoint_node_name"], "node-1");
    assert_eq!(t["__meta_kubernetes_pod_name"], "db-0");
    assert_eq!(t["__meta_kubernetes_pod_container_port_number"], "5432");
    assert!(!t.contains_key("__meta_kubernetes_pod_container_id"));
    let t = &g.targets[1];
    assert_eq!(t["__meta_kubernetes_endpoint_ready"], "false");
    assert_eq!(t["__meta_kubernetes_endpoint_hostname"], "db-1");
    assert!(!t.contains_key("__meta_kubernetes_pod_name"));
    let t = &g.targets[2];
    assert!(
        !t.contains_key("__meta_kubernetes_endpoint_ready"),
        "extra port targets carry no endpoint labels"
    );
    assert_eq!(t["__meta_kubernetes_pod_container_port_name"], "metrics");
    // The service appears later: its labels are attached on the next rebuild.
    api.apply(
        "services",
        json!({"metadata": {"name": "db", "namespace": "default", "labels": {"tier": "data"}}, "spec": {}}),
    );
    let g = p.until(&rt, |g| g["endpoints/default/db"].labels.contains_key("__meta_kubernetes_service_name"));
    assert_eq!(g["endpoints/default/db"].labels["__meta_kubernetes_service_label_tier"], "data");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn watches_are_shared_filtered_and_survive_gone_drops_and_bookmarks() {
    let (api, dir, rt) = setup("k8s-watch");
    api.apply("pods", pod("default", "a", "node-1", "10.0.0.1", 80));
    api.apply("pods", pod("default", "b", "node-2", "10.0.0.2", 80));
    api.apply("namespaces", json!({"metadata": {"name": "default", "labels": {"team": "core"}}}));
    // G-K08: node-local selection; two jobs with the same selectors share one watch.
    let yaml = format!(
        "role: pod\n{KUBECONFIG}selectors: [{{role: pod, field: spec.nodeName=node-1}}]\nattach_metadata: {{namespace: true}}\n"
    );
    let mut p1 = Provider::start(&rt, &dir, "job1", &yaml);
    let mut p2 = Provider::start(&rt, &dir, "job2", &yaml);
    for p in [&mut p1, &mut p2] {
        let g = p.next(&rt);
        assert_eq!(g.keys().collect::<Vec<_>>(), ["pod/default/a"]);
        assert_eq!(g["pod/default/a"].labels["__meta_kubernetes_namespace_label_team"], "core");
    }
    let pod_reqs = |watch: bool| -> Vec<common::kube_api::Request> {
        api.requests().into_iter().filter(|r| r.path == "/api/v1/pods" && r.is_watch() == watch).collect()
    };
    let lists = pod_reqs(false);
    assert_eq!(lists.len(), 1, "one list for two jobs: {lists:?}");
    assert_eq!(lists[0].query["fieldSelector"], "spec.nodeName=node-1");
    assert_eq!(lists[0].query.get("resourceVersion").map(String::as_str), Some("0"), "{lists:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pod_reqs(true).is_empty() {
        assert!(Instant::now() < deadline, "no watch request");
        std::thread::sleep(Duration::from_millis(20));
    }
    let w = &pod_reqs(true)[0];
    assert_eq!(w.query["fieldSelector"], "spec.nodeName=node-1");
    assert_eq!(w.query["allowWatchBookmarks"], "true");

    // Watch events: a pod on another node never arrives; one on node-1 does.
    api.apply("pods", pod("default", "c", "node-2", "10.0.0.3", 80));
    api.apply("pods", pod("default", "d", "node-1", "10.0.0.4", 80));
    let g = p1.until(&rt, |g| g.contains_key("pod/default/d"));
    assert!(!g.contains_key("pod/default/c"));

    // A bookmark moves the resume point; a dropped connection resumes from it without a list.
    api.bookmark();
    std::thread::sleep(Duration::from_millis(500));
    let before = api.requests().len();
    api.drop_connections();
    api.apply("pods", pod("default", "e", "node-1", "10.0.0.5", 80));
    p1.until(&rt, |g| g.contains_key("pod/default/e"));
    let after: Vec<_> =
        api.requests()[before..].iter().filter(|r| r.path == "/api/v1/pods").cloned().collect();
    assert!(after.iter().all(|r| r.is_watch()), "a dropped watch resumes without relisting: {after:?}");

    // 410 Gone: the watcher relists, and changes made meanwhile are not lost.
    api.expire_history();
    api.delete("pods", "default", "a");
    let g = p1.until(&rt, |g| !g.contains_key("pod/default/a"));
    assert!(g.contains_key("pod/default/d") && g.contains_key("pod/default/e"));
    assert_eq!(pod_reqs(false).len(), 2, "relisted once after 410 Gone: {:?}", api.requests());
    // The shared watch serves job2 as well.
    p2.until(&rt, |g| !g.contains_key("pod/default/a") && g.contains_key("pod/default/e"));
    let status = kubernetes::watches::status();
    let pods: Vec<_> = status
        .iter()
        .filter(|w| w.key.resource == "pods" && w.key.cluster.contains(&dir.display().to_string()))
        .collect();
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert!(pods[0].synced);
    assert_eq!(pods[0].objects, 2, "d and e: only node-1 pods are cached");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn agent_scrapes_discovered_pods_and_marks_deleted_ones_stale() {
    let api = KubeApi::start();
    let t1 = Target::start(Reply::text("app_requests_total 5\n"));
    let t2 = Target::start(Reply::text("app_requests_total 7\n"));
    let port = |t: &Target| t.addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    api.apply("pods", pod("shop", "cart-1", "node-1", "127.0.0.1", port(&t1)));
    api.apply("pods", pod("shop", "cart-2", "node-1", "127.0.0.1", port(&t2)));
    api.apply("pods", pod("shop", "other-1", "node-2", "127.0.0.1", port(&t2)));
    let mut quiet = pod("shop", "quiet-1", "node-1", "127.0.0.1", port(&t2));
    quiet["metadata"]["annotations"] = json!({});
    api.apply("pods", quiet);
    let config = r#"global: {scrape_interval: 1s}
scrape_configs:
- job_name: pods
  kubernetes_sd_configs:
  - role: pod
    kubeconfig_file: kubeconfig
    selectors: [{role: pod, field: "spec.nodeName=${NODE_NAME}"}]
  relabel_configs:
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], regex: "true", action: keep}
  - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
  - {source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name], target_label: app}
"#;
    let dir = tmpdir("k8s-agent");
    std::fs::write(dir.join("agent.yaml"), config).unwrap();
    std::fs::write(dir.join("kubeconfig"), api.kubeconfig()).unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let agent = Agent::spawn_env(dir, web, &[("NODE_NAME", "node-1")]);
    let mut seen = BTreeMap::new();
    agent.wait_for(Duration::from_secs(20), |b| {
        if let Some(s) = sample(b, "app_requests_total") {
            seen.insert(s["labels"]["pod"].as_str().unwrap().to_owned(), s["labels"].clone());
        }
        seen.len() == 2
    });
    let l = &seen["cart-1"];
    assert_eq!(l["namespace"], "shop");
    assert_eq!(l["app"], "cart");
    assert_eq!(l["job"], "pods");
    assert_eq!(l["instance"], format!("127.0.0.1:{}", port(&t1)));
    assert!(!seen.contains_key("other-1"), "pods of other nodes are never watched");

    // The targets API shows the pods and the watch.
    let (code, body) = http(&agent.web, "GET", "/api/v1/targets");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["activeTargets"].as_array().unwrap().len(), 2);
    let dropped = v["data"]["droppedTargets"].as_array().unwrap();
    assert_eq!(dropped.len(), 1, "the pod without the scrape annotation");
    assert_eq!(dropped[0]["discoveredLabels"]["__meta_kubernetes_pod_name"], "quiet-1");
    assert_eq!(dropped[0]["discoveredLabels"]["job"], "pods");
    let (_, body) = http(&agent.web, "GET", "/api/v1/targets?state=active");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["activeTargets"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"]["droppedTargets"], json!([]));
    assert_eq!(v["data"]["droppedTargetCounts"]["pods"], 1);
    let w = &v["data"]["kubernetesWatches"][0];
    assert_eq!(w["resource"], "pods");
    assert_eq!(w["fieldSelector"], "spec.nodeName=node-1");
    assert_eq!(w["synced"], true);
    let (_, metrics) = http(&agent.web, "GET", "/metrics");
    assert!(metrics.contains("ferry_kubernetes_watch_objects{resource=\"pods\""), "{metrics}");

    // Deleting a pod ends its target with stale markers.
    api.delete("pods", "shop", "cart-1");
    let b = agent.wait_for(Duration::from_secs(20), |b| {
        sample(b, "app_requests_total")
            .is_some_and(|s| s["labels"]["pod"] == "cart-1" && s["v"] == "StaleNaN")
    });
    assert_eq!(sample(&b, "up").unwrap()["v"], "StaleNaN");
}

#[test]
fn unreachable_api_server_shows_in_watch_status() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tmpdir("k8s-down");
    let port = free_port();
    let yaml = format!("role: service\napi_server: http://127.0.0.1:{port}\n");
    let mut p = Provider::start(&rt, &dir, "down", &yaml);
    let deadline = Instant::now() + Duration::from_secs(15);
    let key = format!("127.0.0.1:{port}");
    let w = loop {
        let s = kubernetes::watches::status();
        if let Some(w) = s.into_iter().find(|w| w.key.cluster.contains(&key) && w.errors > 0) {
            break w;
        }
        assert!(Instant::now() < deadline, "no watch error recorded");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!w.synced);
    assert!(w.last_error.as_deref().is_some_and(|e| !e.is_empty()), "{w:?}");
    // No update is sent while the watch has never listed; the provider keeps running.
    assert!(
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(300), p.rx.recv()).await }).is_err()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cargo test -p ferry-agent --release --test kubernetes -- --ignored --nocapture memory`:
/// agent RSS with 10,000 pods on 500 nodes, watching one node's pods (DaemonSet mode) vs
/// every pod and keeping the node's by relabeling, vs no Kubernetes discovery at all.
#[test]
#[ignore]
fn memory_node_local_vs_cluster_wide() {
    let api = KubeApi::start();
    let (nodes, per_node): (u32, u32) = (500, 20);
    api.load(
        "pods",
        (0..nodes * per_node).map(|i| {
            pod(
                &format!("ns-{}", i % 50),
                &format!("app{}-{i}", i % 40),
                &format!("node-{}", i % nodes),
                &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                1,
            )
        }),
    );
    let config = |sd: &str| {
        format!(
            "global: {{scrape_interval: 60s}}\nscrape_configs:\n- job_name: pods\n{sd}  relabel_configs:\n  - {{source_labels: [__meta_kubernetes_pod_node_name], regex: node-7, action: keep}}\n"
        )
    };
    // Waits until the process at `web` shows the 20 targets (or anything, without discovery),
    // then reads its resident and peak memory.
    let measure = |name: &str, pid: u32, web: &str, want: usize| -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            // state=active: rendering 10,000 dropped targets on every poll would itself cost memory.
            let (_, body) = http(web, "GET", "/api/v1/targets?state=active");
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            if v["data"]["activeTargets"].as_array().is_some_and(|a| a.len() == want) {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: discovery did not finish");
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(3));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib = |field: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(field)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        (kib("VmRSS:"), kib("VmHWM:"))
    };
    let ferry = |name: &str, sd: &str| -> (u64, u64) {
        let dir = tmpdir(&format!("k8s-mem-{name}"));
        std::fs::write(dir.join("agent.yaml"), config(sd)).unwrap();
        std::fs::write(dir.join("kubeconfig"), api.kubeconfig()).unwrap();
        let agent = Agent::spawn(dir, format!("127.0.0.1:{}", free_port()));
        measure(name, agent.child.id(), &agent.web, if sd.is_empty() { 0 } else { per_node as usize })
    };
    let local_sd = "  kubernetes_sd_configs:\n  - role: pod\n    kubeconfig_file: kubeconfig\n    selectors: [{role: pod, field: spec.nodeName=node-7}]\n";
    let wide_sd = "  kubernetes_sd_configs:\n  - role: pod\n    kubeconfig_file: kubeconfig\n";
    let base = ferry("none", "");
    let local = ferry("local", local_sd);
    let wide = ferry("wide", wide_sd);
    println!("10,000 pods on 500 nodes; 20 targets kept in both modes");
    println!("| mode | RSS MiB | peak RSS MiB | above no-discovery MiB |");
    println!("|---|---|---|---|");
    let row = |name: &str, (rss, hwm): (u64, u64), base: u64| {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            (rss as f64 - base as f64) / 1024.0
        );
    };
    row("no Kubernetes SD", base, base.0);
    row("node-local (fieldSelector)", local, base.0);
    row("cluster-wide + relabel keep", wide, base.0);
    println!(
        "ferry-agent, cluster-wide cost per pod: {:.0} bytes of RSS",
        (wide.0 as f64 - local.0 as f64) * 1024.0 / f64::from(nodes * per_node - per_node)
    );
    assert!(local.0 < wide.0, "node-local must hold less than cluster-wide");
}

#[test]
fn a_reloaded_provider_reuses_the_open_watch() {
    let (api, dir, rt) = setup("k8s-reload");
    api.apply(
        "services",
        json!({"metadata": {"name": "s", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}),
    );
    let yaml = format!("role: service\n{KUBECONFIG}");
    let mut first = Provider::start(&rt, &dir, "svc", &yaml);
    first.next(&rt);
    // A reload stops the old provider and starts a new one with the same config.
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    let mut second = Provider::start(&rt, &dir, "svc", &yaml);
    assert!(second.next(&rt).contains_key("svc/default/s"));
    let lists = api.requests().iter().filter(|r| r.path == "/api/v1/services" && !r.is_watch()).count();
    assert_eq!(lists, 1, "the new provider must reuse the watch, not list again");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn api_server_credentials_and_attached_node_metadata() {
    let (api, dir, rt) = setup("k8s-attach");
    std::fs::write(dir.join("token"), "rotating-secret\n").unwrap();
    api.apply("pods", pod("default", "a", "node-1", "10.0.0.1", 80));
    api.apply("pods", pod("default", "b", "node-2", "10.0.0.2", 80));
    api.apply(
        "nodes",
        json!({"metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/zone": "z1"}}}),
    );
    api.apply("nodes", json!({"metadata": {"name": "node-2"}}));
    let yaml = format!(
        "role: pod\napi_server: http://{}\nauthorization: {{credentials_file: token}}\nattach_metadata: {{node: true}}\nselectors: [{{role: node, field: metadata.name=node-1}}]\n",
        api.addr
    );
    let mut p = Provider::start(&rt, &dir, "attach", &yaml);
    let g = p.next(&rt);
    let a = &g["pod/default/a"];
    assert_eq!(a.labels["__meta_kubernetes_node_name"], "node-1");
    assert_eq!(a.labels["__meta_kubernetes_node_label_topology_kubernetes_io_zone"], "z1");
    assert_eq!(a.targets.len(), 1);
    // node-2 is outside the node selector, so its pod has no targets (as in Prometheus).
    assert!(g["pod/default/b"].targets.is_empty());
    let reqs = api.requests();
    let nodes = reqs.iter().find(|r| r.path == "/api/v1/nodes").expect("node list");
    assert_eq!(nodes.query["fieldSelector"], "metadata.name=node-1");
    assert!(
        reqs.iter()
            .all(|r| r.headers.get("authorization").map(String::as_str) == Some("Bearer rotating-secret"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn outside_a_cluster_without_api_server_or_kubeconfig_is_a_visible_error() {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return; // running inside a cluster: in-cluster config would work
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tmpdir("k8s-incluster");
    let mut p = Provider::start(&rt, &dir, "incluster-job", "role: pod\n");
    // The provider ends (no client) and says why; it never falls back to ~/.kube/config.
    let ended = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), p.rx.recv()).await });
    assert!(matches!(ended, Ok(None)), "the provider should end without sending");
    let failed = kubernetes::failed_providers();
    let (_, _, e) = failed.iter().find(|(j, _, _)| j == "incluster-job").expect("recorded failure");
    assert!(e.contains("in-cluster") && e.contains("api_server or kubeconfig_file"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
