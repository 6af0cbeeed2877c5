//! `kubernetes_sd_configs`: targets and `__meta_kubernetes_*` labels for the roles `node`,
//! `service`, `pod`, `endpoints`, `endpointslice` and `ingress`, as Prometheus gives them.
//!
//! - [`objects`]: the resources, reduced to what discovery reads as they are decoded;
//! - [`watches`]: one shared list/watch per (cluster, resource, namespace, selectors);
//! - [`client`]: in-cluster, kubeconfig or `api_server` clients;
//! - [`labels`] and the role modules: objects → target groups.
//!
//! A provider subscribes to the watches its role needs, and whenever one changes (and all
//! have listed once) rebuilds its groups from the caches and sends the full set, at most once
//! per [`MIN_SEND_INTERVAL`] so that churn in a large cluster costs one rebuild per interval.

pub mod client;
pub mod endpoints;
pub mod ingress;
pub mod labels;
pub mod node;
pub mod objects;
pub mod pod;
pub mod service;
pub mod watches;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use kube::Client;
use tokio::sync::{Notify, mpsc, watch};

use self::labels::Ctx;
use self::objects::{
    EndpointSliceWire, EndpointsWire, IngressWire, NamespaceWire, NodeWire, PodWire, ServiceWire, Wire,
};
use self::watches::{Shared, WatchKey};
use crate::config::KubernetesSdConfig;
use crate::scrape::manager::Update;
use crate::scrape::target::TargetGroup;

/// How long a stopped provider's watches stay open, so that the provider a reload starts in
/// its place picks them up instead of listing again.
const LINGER: Duration = Duration::from_secs(10);
/// Changes arriving within this window are folded into one rebuild.
const COALESCE: Duration = Duration::from_millis(50);
/// Rebuilds of one provider are at least this far apart (Prometheus batches for 5 s).
pub const MIN_SEND_INTERVAL: Duration = Duration::from_secs(1);

/// Providers that could not start (no client): (job, provider) → error, for the targets API
/// and `/metrics`.
static FAILED: LazyLock<Mutex<BTreeMap<(String, String), String>>> = LazyLock::new(Default::default);

/// Providers that could not start, with why.
pub fn failed_providers() -> Vec<(String, String, String)> {
    FAILED.lock().expect("failed lock").iter().map(|((j, p), e)| (j.clone(), p.clone(), e.clone())).collect()
}

/// The selectors of one selector role, as (label, field).
fn selector(cfg: &KubernetesSdConfig, role: &str) -> (Option<String>, Option<String>) {
    cfg.selectors
        .iter()
        .find(|s| s.role == role)
        .map(|s| (s.label.clone().filter(|l| !l.is_empty()), s.field.clone().filter(|f| !f.is_empty())))
        .unwrap_or_default()
}

/// The watches one provider holds.
#[derive(Debug, Default)]
struct Watches {
    pods: Vec<Arc<Shared<PodWire>>>,
    services: Vec<Arc<Shared<ServiceWire>>>,
    endpoints: Vec<Arc<Shared<EndpointsWire>>>,
    slices: Vec<Arc<Shared<EndpointSliceWire>>>,
    ingresses: Vec<Arc<Shared<IngressWire>>>,
    /// The node role's own watch, or attached node metadata.
    nodes: Option<Arc<Shared<NodeWire>>>,
    namespaces: Option<Arc<Shared<NamespaceWire>>>,
}

struct Starter<'a> {
    client: &'a Client,
    cluster: &'a str,
    cfg: &'a KubernetesSdConfig,
    namespaces: &'a [Option<String>],
    notify: &'a Arc<Notify>,
}

impl Starter<'_> {
    fn one<W: Wire>(&self, selector_role: &str, namespace: Option<String>) -> Arc<Shared<W>> {
        let (labels, fields) = selector(self.cfg, selector_role);
        let key =
            WatchKey { cluster: self.cluster.to_owned(), resource: W::PLURAL, namespace, labels, fields };
        let s = watches::get::<W>(self.client, key);
        s.subscribe(self.notify);
        s
    }

    /// One watch per configured namespace (one cluster-wide watch when none are configured).
    fn per_namespace<W: Wire>(&self, selector_role: &str) -> Vec<Arc<Shared<W>>> {
        self.namespaces.iter().map(|ns| self.one::<W>(selector_role, ns.clone())).collect()
    }
}

impl Watches {
    fn start(s: &Starter<'_>) -> Watches {
        let attach = &s.cfg.attach_metadata;
        let mut w = Watches::default();
        match s.cfg.role.as_str() {
            "node" => w.nodes = Some(s.one("node", None)),
            "pod" => w.pods = s.per_namespace("pod"),
            "service" => w.services = s.per_namespace("service"),
            "ingress" => w.ingresses = s.per_namespace("ingress"),
            role @ ("endpoints" | "endpointslice") => {
                if role == "endpoints" {
                    w.endpoints = s.per_namespace("endpoints");
                } else {
                    w.slices = s.per_namespace("endpointslice");
                }
                w.services = s.per_namespace("service");
                w.pods = s.per_namespace("pod");
            }
            _ => {}
        }
        let role = s.cfg.role.as_str();
        if attach.node && matches!(role, "pod" | "endpoints" | "endpointslice") {
            w.nodes = Some(s.one("node", None));
        }
        if attach.namespace && role != "node" {
            w.namespaces = Some(s.one("namespace", None));
        }
        w
    }

    fn synced(&self) -> bool {
        self.pods.iter().all(|s| s.synced())
            && self.services.iter().all(|s| s.synced())
            && self.endpoints.iter().all(|s| s.synced())
            && self.slices.iter().all(|s| s.synced())
            && self.ingresses.iter().all(|s| s.synced())
            && self.nodes.iter().all(|s| s.synced())
            && self.namespaces.iter().all(|s| s.synced())
    }

    /// Every group of the provider, sorted by source. `prev_nodes` supplies the groups of nodes
    /// that have no address (Prometheus keeps their last group).
    fn build(&self, role: &str, prev_nodes: &BTreeMap<String, TargetGroup>) -> Vec<TargetGroup> {
        let pods: Vec<_> = self.pods.iter().map(|s| s.objects()).collect();
        let services: Vec<_> = self.services.iter().map(|s| s.objects()).collect();
        let nodes = self.nodes.as_ref().map(|s| s.objects());
        let namespaces = self.namespaces.as_ref().map(|s| s.objects());
        let ctx = Ctx {
            pods: pods.iter().map(|g| &**g).collect(),
            services: services.iter().map(|g| &**g).collect(),
            nodes: if role == "node" { None } else { nodes.as_deref() },
            namespaces: namespaces.as_deref(),
        };
        let mut out = BTreeMap::new();
        let mut put = |g: TargetGroup| {
            out.insert(g.source.clone(), g);
        };
        match role {
            "node" => {
                for n in nodes.iter().flat_map(|m| m.values()) {
                    match node::build(n) {
                        Some(g) => put(g),
                        None => {
                            if let Some(g) = prev_nodes.get(&node::source(n)) {
                                put(g.clone())
                            }
                        }
                    }
                }
            }
            "pod" => pods.iter().flat_map(|m| m.values()).for_each(|p| put(pod::build(p, &ctx))),
            "service" => services.iter().flat_map(|m| m.values()).for_each(|s| put(service::build(s, &ctx))),
            "endpoints" => {
                for m in &self.endpoints {
                    m.objects().values().for_each(|e| put(endpoints::build_endpoints(e, &ctx)));
                }
            }
            "endpointslice" => {
                for m in &self.slices {
                    m.objects().values().for_each(|e| put(endpoints::build_slice(e, &ctx)));
                }
            }
            "ingress" => {
                for m in &self.ingresses {
                    m.objects().values().for_each(|i| put(ingress::build(i, &ctx)));
                }
            }
            _ => {}
        }
        out.into_values().collect()
    }
}

/// The namespaces to watch: the configured names (plus the own namespace), or all.
fn namespaces(cfg: &KubernetesSdConfig) -> Result<Vec<Option<String>>, String> {
    let mut names = cfg.namespaces.names.clone();
    if cfg.namespaces.own_namespace {
        names.push(client::own_namespace()?);
    }
    names.sort();
    names.dedup();
    Ok(if names.is_empty() { vec![None] } else { names.into_iter().map(Some).collect() })
}

/// Runs one `kubernetes_sd_config` of a job until `stop` changes.
pub async fn run(
    job: String,
    provider: String,
    cfg: KubernetesSdConfig,
    base: PathBuf,
    tx: mpsc::Sender<Update>,
    mut stop: watch::Receiver<bool>,
) {
    let fail_key = (job.clone(), provider.clone());
    let started = async {
        let (client, cluster) = client::build(&cfg, &base).await?;
        Ok::<_, String>((client, cluster, namespaces(&cfg)?))
    };
    let (client, cluster, ns) = match started.await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(job, error = %e, "kubernetes_sd: cannot start; this provider finds no targets");
            FAILED.lock().expect("failed lock").insert(fail_key, e);
            return;
        }
    };
    FAILED.lock().expect("failed lock").remove(&fail_key);
    if cfg.attach_metadata.deployment || cfg.attach_metadata.job || cfg.attach_metadata.cronjob {
        tracing::warn!(
            job,
            "kubernetes_sd: attach_metadata deployment/job/cronjob are not supported; ignored"
        );
    }
    let notify = Arc::new(Notify::new());
    let w = Watches::start(&Starter {
        client: &client,
        cluster: &cluster,
        cfg: &cfg,
        namespaces: &ns,
        notify: &notify,
    });
    // Watches shared with other providers may have listed already and will not wake us.
    notify.notify_one();
    serve(&job, &provider, &cfg.role, &w, &notify, &tx, &mut stop).await;
    tokio::spawn(async move {
        tokio::time::sleep(LINGER).await;
        drop(w);
    });
}

/// Rebuilds and sends on every change until `stop` changes or the manager is gone.
async fn serve(
    job: &str,
    provider: &str,
    role: &str,
    w: &Watches,
    notify: &Notify,
    tx: &mpsc::Sender<Update>,
    stop: &mut watch::Receiver<bool>,
) {
    // Only a hash of the last set sent is kept (the manager holds the groups themselves),
    // and, for the node role, the node groups (small) that an address-less node falls back to.
    let mut last: Option<u64> = None;
    let mut nodes = BTreeMap::new();
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = stop.changed() => return,
        }
        if !w.synced() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(COALESCE) => {}
            _ = stop.changed() => return,
        }
        let groups = w.build(role, &nodes);
        let hash = {
            let mut h = std::hash::DefaultHasher::new();
            groups.hash(&mut h);
            h.finish()
        };
        if last != Some(hash) {
            if role == "node" {
                nodes = groups.iter().map(|g| (g.source.clone(), g.clone())).collect();
            }
            let update = Update { job: job.to_owned(), provider: provider.to_owned(), groups };
            if tx.send(update).await.is_err() {
                return;
            }
            last = Some(hash);
        }
        tokio::select! {
            _ = tokio::time::sleep(MIN_SEND_INTERVAL.saturating_sub(COALESCE)) => {}
            _ = stop.changed() => return,
        }
    }
}
