//! Role `node` (`discovery/kubernetes/node.go`): one target per node at its preferred address
//! and the kubelet port, `instance` set to the node name.

use super::labels::{Labels, join_host_port, object_meta, sanitize, set};
use super::objects::Node;
use crate::scrape::target::TargetGroup;

/// Address types in the order Prometheus prefers them.
const PRIORITY: [&str; 6] =
    ["InternalIP", "InternalDNS", "ExternalIP", "ExternalDNS", "LegacyHostIP", "Hostname"];

pub fn source(n: &Node) -> String {
    format!("node/{}", n.meta.name)
}

/// The node's group, or `None` when it has no address at all (Prometheus then logs and sends
/// nothing, so the previous group stays).
pub fn build(n: &Node) -> Option<TargetGroup> {
    let status = &n.body.status;
    let first = |kind: &str| status.addresses.iter().find(|a| a.kind == kind).map(|a| a.address.as_str());
    let Some(addr) = PRIORITY.iter().find_map(|k| first(k)) else {
        tracing::warn!(node = %n.meta.name, "kubernetes_sd: node has no address; keeping its previous target");
        return None;
    };
    let mut g = Labels::new();
    object_meta(&mut g, "node", &n.meta);
    set(&mut g, "node_provider_id", n.body.spec.provider_id.as_str());
    for c in &status.conditions {
        set(&mut g, &format!("node_condition_{}", sanitize(&c.kind.to_lowercase())), c.status.to_lowercase());
    }
    let mut t = Labels::new();
    t.insert("__address__".into(), join_host_port(addr, status.daemon_endpoints.kubelet_endpoint.port));
    t.insert("instance".into(), n.meta.name.clone());
    for a in &status.addresses {
        t.entry(format!("{}node_address_{}", super::labels::PREFIX, a.kind))
            .or_insert_with(|| a.address.clone());
    }
    Some(TargetGroup { source: source(n), targets: vec![t], labels: g })
}
