//! Roles `endpoints` and `endpointslice` (`endpoints.go`, `endpointslice.go`): one target per
//! address and port, enriched with the backing pod's labels when that pod is cached, with the
//! service's name, labels and annotations, and with one extra target per container port of a
//! seen pod that no endpoint port matched.

use std::collections::BTreeMap;

use super::labels::{Ctx, Labels, join_host_port, object_meta, sanitize, set};
use super::objects::{EndpointSlice, Endpoints, ObjectRef, Pod};
use super::pod::{containers, pod_labels};
use super::service::service_labels;
use crate::scrape::target::TargetGroup;

/// Pods seen behind a group's addresses, with the endpoint ports that reached them.
#[derive(Default)]
struct Seen<'a> {
    pods: BTreeMap<String, (&'a Pod, Vec<i32>)>,
}

impl<'a> Seen<'a> {
    /// Adds the pod labels and, when a container declares `port`, its container labels (the
    /// protocol is the endpoint port's, as in Prometheus). Records the port as served.
    fn enrich(&mut self, t: &mut Labels, pod: &'a Pod, port: Option<i32>, protocol: &str) {
        let entry = self.pods.entry(pod.meta.key()).or_insert((pod, Vec::new()));
        pod_labels(t, pod);
        let Some(port) = port else { return };
        for (c, init) in containers(pod) {
            if let Some(cp) = c.ports.iter().find(|cp| cp.container_port == port) {
                set(t, "pod_container_name", c.name.as_str());
                set(t, "pod_container_image", c.image.as_str());
                set(t, "pod_container_port_name", cp.name.as_str());
                set(t, "pod_container_port_number", port.to_string());
                set(t, "pod_container_port_protocol", protocol);
                set(t, "pod_container_init", init.to_string());
            }
        }
        entry.1.push(port);
    }

    /// One target per container port of a seen pod that no endpoint port matched.
    fn unmatched_ports(self, out: &mut Vec<Labels>) {
        for (pod, served) in self.pods.into_values() {
            let ip = &pod.body.status.pod_ip;
            if ip.is_empty() {
                continue;
            }
            for (c, init) in containers(pod) {
                for cp in c.ports.iter().filter(|cp| !served.contains(&cp.container_port)) {
                    let mut t = Labels::new();
                    t.insert("__address__".into(), join_host_port(ip, cp.container_port));
                    set(&mut t, "pod_container_name", c.name.as_str());
                    set(&mut t, "pod_container_image", c.image.as_str());
                    set(&mut t, "pod_container_port_name", cp.name.as_str());
                    set(&mut t, "pod_container_port_number", cp.container_port.to_string());
                    set(&mut t, "pod_container_port_protocol", cp.protocol.as_str());
                    set(&mut t, "pod_container_init", init.to_string());
                    pod_labels(&mut t, pod);
                    out.push(t);
                }
            }
        }
    }
}

/// The cached pod a target reference names, if it names a pod.
fn pod_ref<'a>(ctx: &'a Ctx<'_>, r: Option<&ObjectRef>) -> Option<&'a Pod> {
    let r = r.filter(|r| r.kind == "Pod")?;
    ctx.pod(&super::objects::key(&r.namespace, &r.name))
}

/// Node metadata for one address (`attach_metadata.node`): by node name, or by a target
/// reference to a node.
fn node_labels(ctx: &Ctx<'_>, t: &mut Labels, node: Option<&str>, r: Option<&ObjectRef>) {
    let node = node.or_else(|| r.filter(|r| r.kind == "Node").map(|r| r.name.as_str()));
    if let Some(n) = node {
        ctx.node_labels(t, n);
    }
}

pub fn build_endpoints(e: &Endpoints, ctx: &Ctx<'_>) -> TargetGroup {
    let (ns, name) = (&e.meta.namespace, &e.meta.name);
    let mut g = Labels::new();
    set(&mut g, "namespace", ns.as_str());
    object_meta(&mut g, "endpoints", &e.meta);
    if let Some(s) = ctx.service(&e.meta.key()) {
        service_labels(&mut g, s);
    }
    ctx.namespace_labels(&mut g, ns);
    if e.meta.label("endpoints.kubernetes.io/over-capacity") == Some("truncated") {
        tracing::warn!(endpoints = %e.meta.key(), "kubernetes_sd: the Endpoints object was truncated at 1000 addresses; use role endpointslice");
    }
    let mut seen = Seen::default();
    let mut targets = Vec::new();
    for ss in &e.body.subsets {
        for port in &ss.ports {
            let ready = ss.addresses.iter().map(|a| (a, "true"));
            let not_ready = ss.not_ready_addresses.iter().map(|a| (a, "false"));
            for (addr, ready) in ready.chain(not_ready) {
                let mut t = Labels::new();
                t.insert("__address__".into(), join_host_port(&addr.ip, port.port));
                set(&mut t, "endpoint_port_name", port.name.as_str());
                set(&mut t, "endpoint_port_protocol", port.protocol.as_str());
                set(&mut t, "endpoint_ready", ready);
                if let Some(r) = &addr.target_ref {
                    set(&mut t, "endpoint_address_target_kind", r.kind.as_str());
                    set(&mut t, "endpoint_address_target_name", r.name.as_str());
                }
                if let Some(n) = &addr.node_name {
                    set(&mut t, "endpoint_node_name", n.as_str());
                }
                if !addr.hostname.is_empty() {
                    set(&mut t, "endpoint_hostname", addr.hostname.as_str());
                }
                node_labels(ctx, &mut t, addr.node_name.as_deref(), addr.target_ref.as_ref());
                if let Some(pod) = pod_ref(ctx, addr.target_ref.as_ref()) {
                    seen.enrich(&mut t, pod, Some(port.port), &port.protocol);
                }
                targets.push(t);
            }
        }
    }
    seen.unmatched_ports(&mut targets);
    TargetGroup { source: format!("endpoints/{ns}/{name}"), targets, labels: g }
}

pub fn build_slice(s: &EndpointSlice, ctx: &Ctx<'_>) -> TargetGroup {
    let (ns, name) = (&s.meta.namespace, &s.meta.name);
    let body = &s.body;
    let mut g = Labels::new();
    set(&mut g, "namespace", ns.as_str());
    object_meta(&mut g, "endpointslice", &s.meta);
    set(&mut g, "endpointslice_address_type", body.address_type.as_str());
    let service =
        s.meta.label("kubernetes.io/service-name").and_then(|svc| ctx.service(&super::objects::key(ns, svc)));
    if let Some(svc) = service {
        service_labels(&mut g, svc);
    }
    ctx.namespace_labels(&mut g, ns);
    let mut group =
        TargetGroup { source: format!("endpointslice/{ns}/{name}"), targets: Vec::new(), labels: g };
    // The secondary IP family of a dual-stack service would duplicate every target.
    if let Some(svc) = service {
        let spec = &svc.body.spec;
        let dual = matches!(spec.ip_family_policy.as_str(), "PreferDualStack" | "RequireDualStack");
        if dual && spec.ip_families.first().is_some_and(|f| *f != body.address_type) {
            return group;
        }
    }
    let mut seen = Seen::default();
    for ep in &body.endpoints {
        for port in body.ports.iter().flatten() {
            for addr in &ep.addresses {
                let mut t = Labels::new();
                let address = match port.port {
                    Some(p) => join_host_port(addr, p),
                    None => addr.clone(),
                };
                t.insert("__address__".into(), address);
                let opt = |t: &mut Labels, suffix: &str, v: &Option<String>| {
                    if let Some(v) = v {
                        set(t, suffix, v.as_str());
                    }
                };
                opt(&mut t, "endpointslice_port_name", &port.name);
                opt(&mut t, "endpointslice_port_protocol", &port.protocol);
                if let Some(p) = port.port {
                    set(&mut t, "endpointslice_port", p.to_string());
                }
                opt(&mut t, "endpointslice_port_app_protocol", &port.app_protocol);
                let c = &ep.conditions;
                for (suffix, v) in
                    [("ready", c.ready), ("serving", c.serving), ("terminating", c.terminating)]
                {
                    if let Some(v) = v {
                        set(&mut t, &format!("endpointslice_endpoint_conditions_{suffix}"), v.to_string());
                    }
                }
                opt(&mut t, "endpointslice_endpoint_hostname", &ep.hostname);
                if let Some(r) = &ep.target_ref {
                    set(&mut t, "endpointslice_address_target_kind", r.kind.as_str());
                    set(&mut t, "endpointslice_address_target_name", r.name.as_str());
                }
                opt(&mut t, "endpointslice_endpoint_node_name", &ep.node_name);
                opt(&mut t, "endpointslice_endpoint_zone", &ep.zone);
                for (k, v) in ep.deprecated_topology.iter().flatten() {
                    let k = sanitize(k);
                    set(&mut t, &format!("endpointslice_endpoint_topology_{k}"), v.as_str());
                    set(&mut t, &format!("endpointslice_endpoint_topology_present_{k}"), "true");
                }
                node_labels(ctx, &mut t, ep.node_name.as_deref(), ep.target_ref.as_ref());
                if let Some(pod) = pod_ref(ctx, ep.target_ref.as_ref()) {
                    seen.enrich(&mut t, pod, port.port, port.protocol.as_deref().unwrap_or(""));
                }
                group.targets.push(t);
            }
        }
    }
    seen.unmatched_ports(&mut group.targets);
    group
}
