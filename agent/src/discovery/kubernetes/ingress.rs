//! Role `ingress` (`discovery/kubernetes/ingress.go`): one target per rule and path, the
//! address being the rule's host (no port), the scheme `https` when a TLS entry covers it.

use super::labels::{Ctx, Labels, object_meta, set};
use super::objects::Ingress;
use crate::scrape::target::TargetGroup;

/// `matchesHostnamePattern`: equal, or `*.rest` matching a host with the same number of
/// labels whose tail equals `rest`.
fn covers(pattern: &str, host: &str) -> bool {
    if pattern == host {
        return true;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len() && p.len() > 1 && p[0] == "*" && p[1..] == h[1..]
}

pub fn build(i: &Ingress, ctx: &Ctx<'_>) -> TargetGroup {
    let (ns, name) = (&i.meta.namespace, &i.meta.name);
    let spec = &i.body.spec;
    let mut g = Labels::new();
    set(&mut g, "namespace", ns.as_str());
    object_meta(&mut g, "ingress", &i.meta);
    if let Some(class) = &spec.ingress_class_name {
        set(&mut g, "ingress_class_name", class.as_str());
    }
    ctx.namespace_labels(&mut g, ns);
    let mut targets = Vec::new();
    for rule in &spec.rules {
        let https = spec.tls.iter().flat_map(|t| &t.hosts).any(|p| covers(p, &rule.host));
        let paths: Vec<&str> = match &rule.http {
            None => vec!["/"],
            Some(h) => {
                h.paths.iter().map(|p| if p.path.is_empty() { "/" } else { p.path.as_str() }).collect()
            }
        };
        for path in paths {
            let mut t = Labels::new();
            t.insert("__address__".into(), rule.host.clone());
            set(&mut t, "ingress_scheme", if https { "https" } else { "http" });
            set(&mut t, "ingress_host", rule.host.as_str());
            set(&mut t, "ingress_path", path);
            targets.push(t);
        }
    }
    TargetGroup { source: format!("ingress/{ns}/{name}"), targets, labels: g }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wildcard_covers_exactly_one_label() {
        assert!(super::covers("*.example.com", "api.example.com"));
        assert!(!super::covers("*.example.com", "a.b.example.com"));
        assert!(!super::covers("*.example.com", "example.com"));
        assert!(super::covers("x.io", "x.io"));
    }
}
