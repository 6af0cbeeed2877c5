//! What every role shares: the `__meta_kubernetes_` names, object metadata labels
//! (`<role>_name`, `_label_*`, `_labelpresent_*`, `_annotation_*`, `_annotationpresent_*`),
//! Prometheus' label-name sanitizing, the caches a role reads while building, and
//! `net.JoinHostPort`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::objects::{Meta, Namespace, Node, Pod, Service};

pub const PREFIX: &str = "__meta_kubernetes_";

pub type Labels = BTreeMap<String, String>;

/// Sets `__meta_kubernetes_<suffix>`.
pub fn set(l: &mut Labels, suffix: &str, value: impl Into<String>) {
    l.insert(format!("{PREFIX}{suffix}"), value.into());
}

/// `util/strutil.SanitizeLabelName`: each character (not byte) outside `[a-zA-Z0-9_]` becomes
/// one `_`.
pub fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// `addObjectMetaLabels`: `<role>_name` plus labels and annotations with their `present` twins.
pub fn object_meta(l: &mut Labels, role: &str, m: &Meta) {
    set(l, &format!("{role}_name"), m.name.as_str());
    maps(l, role, m);
}

/// Labels and annotations only (attached namespace metadata has no `_name`).
pub fn maps(l: &mut Labels, role: &str, m: &Meta) {
    for (kind, pairs) in [("label", &m.labels), ("annotation", &m.annotations)] {
        for (k, v) in pairs.iter() {
            let k = sanitize(k);
            set(l, &format!("{role}_{kind}_{k}"), v.as_str());
            set(l, &format!("{role}_{kind}present_{k}"), "true");
        }
    }
}

/// `net.JoinHostPort`: IPv6 literals get brackets.
pub fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// The caches a role reads while it builds groups (one map per watch; namespaced resources
/// may have one watch per configured namespace). `nodes`/`namespaces` are present only when
/// `attach_metadata` asks for them.
#[derive(Debug, Default)]
pub struct Ctx<'a> {
    pub pods: Vec<&'a HashMap<String, Arc<Pod>>>,
    pub services: Vec<&'a HashMap<String, Arc<Service>>>,
    pub nodes: Option<&'a HashMap<String, Arc<Node>>>,
    pub namespaces: Option<&'a HashMap<String, Arc<Namespace>>>,
}

impl Ctx<'_> {
    pub fn pod(&self, key: &str) -> Option<&Pod> {
        self.pods.iter().find_map(|m| m.get(key)).map(|p| &**p)
    }

    pub fn service(&self, key: &str) -> Option<&Service> {
        self.services.iter().find_map(|m| m.get(key)).map(|s| &**s)
    }

    /// `attach_metadata.namespace`: the namespace's labels and annotations.
    pub fn namespace_labels(&self, l: &mut Labels, namespace: &str) {
        if let Some(ns) = self.namespaces.and_then(|m| m.get(namespace)) {
            maps(l, "namespace", &ns.meta);
        }
    }

    /// `attach_metadata.node`: `node_name` and the node's labels and annotations. False when
    /// node metadata is wanted and the node is not cached.
    pub fn node_labels(&self, l: &mut Labels, node: &str) -> bool {
        let Some(nodes) = self.nodes else { return true };
        match nodes.get(node) {
            Some(n) => {
                object_meta(l, "node", &n.meta);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sanitize_replaces_each_character_not_each_byte() {
        assert_eq!(super::sanitize("é-x"), "__x");
        assert_eq!(super::sanitize("helm.sh/chart"), "helm_sh_chart");
        assert_eq!(super::sanitize("app.kubernetes.io/Name_1"), "app_kubernetes_io_Name_1");
    }

    #[test]
    fn join_host_port_brackets_ipv6() {
        assert_eq!(super::join_host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(super::join_host_port("fd00::1", 80), "[fd00::1]:80");
    }
}
