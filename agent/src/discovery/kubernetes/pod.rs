//! Role `pod` (`discovery/kubernetes/pod.go`): one target per declared container port, one
//! port-less target per container without ports, init containers included and marked; and the
//! pod labels endpoint roles reuse to enrich their targets.

use super::labels::{Ctx, Labels, join_host_port, object_meta, set};
use super::objects::{Container, Pod};
use crate::scrape::target::TargetGroup;

pub fn source(p: &Pod) -> String {
    format!("pod/{}/{}", p.meta.namespace, p.meta.name)
}

/// `podLabels`: everything about the pod itself, without `namespace`.
pub fn pod_labels(l: &mut Labels, p: &Pod) {
    let (spec, status) = (&p.body.spec, &p.body.status);
    set(l, "pod_ip", status.pod_ip.as_str());
    let ready = status.conditions.iter().find(|c| c.kind == "Ready");
    set(l, "pod_ready", ready.map_or("unknown".to_owned(), |c| c.status.to_lowercase()));
    set(l, "pod_phase", status.phase.as_str());
    set(l, "pod_node_name", spec.node_name.as_str());
    set(l, "pod_host_ip", status.host_ip.as_str());
    set(l, "pod_uid", p.meta.uid.as_str());
    if let Some((kind, name)) = &p.meta.controller {
        set(l, "pod_controller_kind", kind.as_str());
        set(l, "pod_controller_name", name.as_str());
    }
    object_meta(l, "pod", &p.meta);
}

/// `spec.containers` then `spec.initContainers`, each with whether it is an init container.
pub fn containers(p: &Pod) -> impl Iterator<Item = (&Container, bool)> {
    let spec = &p.body.spec;
    spec.containers.iter().map(|c| (c, false)).chain(spec.init_containers.iter().map(|c| (c, true)))
}

pub fn build(p: &Pod, ctx: &Ctx<'_>) -> TargetGroup {
    let mut group = TargetGroup { source: source(p), targets: Vec::new(), labels: Labels::new() };
    let ip = p.body.status.pod_ip.as_str();
    if ip.is_empty() {
        return group;
    }
    let mut g = Labels::new();
    if !ctx.node_labels(&mut g, &p.body.spec.node_name) {
        // attach_metadata.node and the node is not (or not yet) cached: no targets.
        return group;
    }
    pod_labels(&mut g, p);
    set(&mut g, "namespace", p.meta.namespace.as_str());
    ctx.namespace_labels(&mut g, &p.meta.namespace);
    group.labels = g;
    for (c, init) in containers(p) {
        let statuses =
            if init { &p.body.status.init_container_statuses } else { &p.body.status.container_statuses };
        let id = statuses.iter().find(|s| s.name == c.name).map_or("", |s| s.container_id.as_str());
        let mut base = Labels::new();
        set(&mut base, "pod_container_name", c.name.as_str());
        set(&mut base, "pod_container_id", id);
        set(&mut base, "pod_container_image", c.image.as_str());
        set(&mut base, "pod_container_init", init.to_string());
        if c.ports.is_empty() {
            base.insert("__address__".into(), ip.to_owned());
            group.targets.push(base);
            continue;
        }
        for port in &c.ports {
            let mut t = base.clone();
            t.insert("__address__".into(), join_host_port(ip, port.container_port));
            set(&mut t, "pod_container_port_name", port.name.as_str());
            set(&mut t, "pod_container_port_number", port.container_port.to_string());
            set(&mut t, "pod_container_port_protocol", port.protocol.as_str());
            group.targets.push(t);
        }
    }
    group
}
