//! Role `service` (`discovery/kubernetes/service.go`): one target per service port at
//! `<name>.<namespace>.svc:<port>`; and the service labels endpoint roles attach.

use super::labels::{Ctx, Labels, object_meta, set};
use super::objects::Service;
use crate::scrape::target::TargetGroup;

/// `service_name` plus the service's labels and annotations (what endpoint roles attach).
pub fn service_labels(l: &mut Labels, s: &Service) {
    object_meta(l, "service", &s.meta);
}

pub fn build(s: &Service, ctx: &Ctx<'_>) -> TargetGroup {
    let (ns, name) = (&s.meta.namespace, &s.meta.name);
    let mut g = Labels::new();
    set(&mut g, "namespace", ns.as_str());
    service_labels(&mut g, s);
    ctx.namespace_labels(&mut g, ns);
    let spec = &s.body.spec;
    let targets = spec
        .ports
        .iter()
        .map(|p| {
            let mut t = Labels::new();
            t.insert("__address__".into(), format!("{name}.{ns}.svc:{}", p.port));
            set(&mut t, "service_port_name", p.name.as_str());
            set(&mut t, "service_port_number", p.port.to_string());
            set(&mut t, "service_port_protocol", p.protocol.as_str());
            set(&mut t, "service_type", spec.kind.as_str());
            if spec.kind == "ExternalName" {
                set(&mut t, "service_external_name", spec.external_name.as_str());
            } else {
                set(&mut t, "service_cluster_ip", spec.cluster_ip.as_str());
            }
            if spec.kind == "LoadBalancer" {
                let ips: Vec<&str> = s
                    .body
                    .status
                    .load_balancer
                    .ingress
                    .iter()
                    .map(|i| i.ip.as_str())
                    .filter(|ip| !ip.is_empty())
                    .collect();
                let ip = if ips.is_empty() { spec.load_balancer_ip.clone() } else { ips.join(",") };
                set(&mut t, "service_loadbalancer_ip", ip);
            }
            t
        })
        .collect();
    TargetGroup { source: format!("svc/{ns}/{name}"), targets, labels: g }
}
