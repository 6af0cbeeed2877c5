//! The Kubernetes objects discovery reads, reduced as they are decoded: each resource is
//! decoded into a wire type that keeps only the fields service discovery reads (serde skips
//! the rest, `managedFields` included, without allocating them), and is then turned into an
//! [`Obj`] whose metadata is a compact [`Meta`] rather than a full `ObjectMeta`. Only `Obj`s
//! are held in the shared caches, so memory follows what discovery uses.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The metadata discovery reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// Sorted by name (from the API's map).
    pub labels: Box<[(String, String)]>,
    pub annotations: Box<[(String, String)]>,
    /// The owner reference with `controller: true`: (kind, name).
    pub controller: Option<(String, String)>,
}

impl Meta {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The cache key: `namespace/name` (just `name` for cluster-scoped objects).
    pub fn key(&self) -> String {
        key(&self.namespace, &self.name)
    }
}

pub fn key(namespace: &str, name: &str) -> String {
    if namespace.is_empty() { name.to_owned() } else { format!("{namespace}/{name}") }
}

fn pairs(m: Option<BTreeMap<String, String>>) -> Box<[(String, String)]> {
    m.unwrap_or_default().into_iter().collect()
}

impl From<ObjectMeta> for Meta {
    fn from(m: ObjectMeta) -> Meta {
        Meta {
            name: m.name.unwrap_or_default(),
            namespace: m.namespace.unwrap_or_default(),
            uid: m.uid.unwrap_or_default(),
            labels: pairs(m.labels),
            annotations: pairs(m.annotations),
            controller: m
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .find(|o| o.controller == Some(true))
                .map(|o| (o.kind, o.name)),
        }
    }
}

/// Decodes `metadata` keeping only what discovery and the watcher read (the watcher needs
/// `resourceVersion`); `managedFields` and the rest are skipped by serde.
fn slim_meta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Owner {
        kind: String,
        name: String,
        #[serde(default)]
        controller: Option<bool>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Slim {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        labels: Option<BTreeMap<String, String>>,
        annotations: Option<BTreeMap<String, String>>,
        owner_references: Option<Vec<Owner>>,
    }
    let s = Slim::deserialize(d)?;
    Ok(ObjectMeta {
        name: s.name,
        namespace: s.namespace,
        uid: s.uid,
        resource_version: s.resource_version,
        labels: s.labels,
        annotations: s.annotations,
        owner_references: s.owner_references.map(|v| {
            v.into_iter()
                .filter(|o| o.controller == Some(true))
                .map(|o| k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    kind: o.kind,
                    name: o.name,
                    controller: o.controller,
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    })
}

/// A cached object: compact metadata plus the kind's own fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Obj<B> {
    pub meta: Meta,
    pub body: B,
}

/// A wire type: what the watcher decodes, and how it is reduced for the cache.
pub trait Wire:
    Resource<DynamicType = (), Scope = kube::core::DynamicResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    type Body: Debug + Send + Sync + 'static;
    /// Resource name in API paths (`pods`), also used in self-metrics.
    const PLURAL: &'static str;
    const NAMESPACED: bool;
    fn reduce(self) -> Obj<Self::Body>;
}

/// Declares a wire type `$wire` for kind `$kind` whose body is the listed top-level fields.
macro_rules! wire {
    ($wire:ident, $body:ident, $kind:literal, $group:literal, $version:literal, $plural:literal,
     $namespaced:literal, { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Clone, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $wire {
            #[serde(deserialize_with = "slim_meta", default)]
            pub metadata: ObjectMeta,
            $($(#[$fm])* #[serde(default)] pub $field: $ty,)*
        }

        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $body {
            $(pub $field: $ty,)*
        }

        impl Resource for $wire {
            type DynamicType = ();
            type Scope = kube::core::DynamicResourceScope;
            fn kind(_: &()) -> Cow<'_, str> { Cow::Borrowed($kind) }
            fn group(_: &()) -> Cow<'_, str> { Cow::Borrowed($group) }
            fn version(_: &()) -> Cow<'_, str> { Cow::Borrowed($version) }
            fn plural(_: &()) -> Cow<'_, str> { Cow::Borrowed($plural) }
            fn meta(&self) -> &ObjectMeta { &self.metadata }
            fn meta_mut(&mut self) -> &mut ObjectMeta { &mut self.metadata }
        }

        impl Wire for $wire {
            type Body = $body;
            const PLURAL: &'static str = $plural;
            const NAMESPACED: bool = $namespaced;
            fn reduce(self) -> Obj<$body> {
                Obj { meta: self.metadata.into(), body: $body { $($field: self.$field,)* } }
            }
        }
    };
}

wire!(PodWire, PodBody, "Pod", "", "v1", "pods", true, { spec: PodSpec, status: PodStatus });
wire!(ServiceWire, ServiceBody, "Service", "", "v1", "services", true, { spec: ServiceSpec, status: ServiceStatus });
wire!(EndpointsWire, EndpointsBody, "Endpoints", "", "v1", "endpoints", true, { subsets: Vec<Subset> });
wire!(EndpointSliceWire, EndpointSliceBody, "EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", true, {
    address_type: String,
    endpoints: Vec<SliceEndpoint>,
    ports: Option<Vec<SlicePort>>,
});
wire!(IngressWire, IngressBody, "Ingress", "networking.k8s.io", "v1", "ingresses", true, { spec: IngressSpec });
wire!(NodeWire, NodeBody, "Node", "", "v1", "nodes", false, { spec: NodeSpec, status: NodeStatus });
wire!(NamespaceWire, NamespaceBody, "Namespace", "", "v1", "namespaces", false, {});

pub type Pod = Obj<PodBody>;
pub type Service = Obj<ServiceBody>;
pub type Endpoints = Obj<EndpointsBody>;
pub type EndpointSlice = Obj<EndpointSliceBody>;
pub type Ingress = Obj<IngressBody>;
pub type Node = Obj<NodeBody>;
pub type Namespace = Obj<NamespaceBody>;

// --- Pod ---

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    pub node_name: String,
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    pub name: String,
    pub container_port: i32,
    pub protocol: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    pub phase: String,
    #[serde(rename = "podIP")]
    pub pod_ip: String,
    #[serde(rename = "hostIP")]
    pub host_ip: String,
    pub conditions: Vec<Condition>,
    pub container_statuses: Vec<ContainerStatus>,
    pub init_container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerStatus {
    pub name: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
}

// --- Service ---

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: String,
    pub external_name: String,
    #[serde(rename = "loadBalancerIP")]
    pub load_balancer_ip: String,
    pub ports: Vec<ServicePort>,
    pub ip_family_policy: String,
    pub ip_families: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServicePort {
    pub name: String,
    pub port: i32,
    pub protocol: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceStatus {
    pub load_balancer: LoadBalancerStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LoadBalancerStatus {
    pub ingress: Vec<LoadBalancerIngress>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LoadBalancerIngress {
    pub ip: String,
}

// --- Endpoints ---

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Subset {
    pub addresses: Vec<EndpointAddress>,
    pub not_ready_addresses: Vec<EndpointAddress>,
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointAddress {
    pub ip: String,
    pub hostname: String,
    pub node_name: Option<String>,
    pub target_ref: Option<ObjectRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointPort {
    pub name: String,
    pub port: i32,
    pub protocol: String,
}

// --- EndpointSlice ---

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SliceEndpoint {
    pub addresses: Vec<String>,
    pub conditions: SliceConditions,
    pub hostname: Option<String>,
    pub target_ref: Option<ObjectRef>,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    pub deprecated_topology: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SliceConditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SlicePort {
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub port: Option<i32>,
    pub app_protocol: Option<String>,
}

// --- Ingress ---

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IngressSpec {
    pub ingress_class_name: Option<String>,
    pub tls: Vec<IngressTls>,
    pub rules: Vec<IngressRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IngressTls {
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IngressRule {
    pub host: String,
    pub http: Option<IngressHttp>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IngressHttp {
    pub paths: Vec<IngressPath>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IngressPath {
    pub path: String,
}

// --- Node ---

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSpec {
    #[serde(rename = "providerID")]
    pub provider_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeStatus {
    pub addresses: Vec<NodeAddress>,
    pub conditions: Vec<Condition>,
    pub daemon_endpoints: DaemonEndpoints,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DaemonEndpoints {
    pub kubelet_endpoint: KubeletEndpoint,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeletEndpoint {
    #[serde(rename = "Port")]
    pub port: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_is_reduced_to_what_discovery_reads() {
        let json = r#"{"apiVersion":"v1","kind":"Pod",
          "metadata":{"name":"p","namespace":"ns","uid":"u","resourceVersion":"7",
            "labels":{"b":"2","a":"1"},
            "managedFields":[{"manager":"kubectl","fieldsV1":{"f:spec":{}}}],
            "ownerReferences":[{"apiVersion":"v1","kind":"X","name":"x","uid":"1"},
                               {"apiVersion":"apps/v1","kind":"ReplicaSet","name":"rs","uid":"2","controller":true}]},
          "spec":{"nodeName":"n1","volumes":[{"name":"v"}],
            "containers":[{"name":"c","image":"i","ports":[{"containerPort":80,"protocol":"TCP"}]}]},
          "status":{"podIP":"10.0.0.1","phase":"Running"}}"#;
        let w: PodWire = serde_json::from_str(json).unwrap();
        assert_eq!(w.metadata.resource_version.as_deref(), Some("7"));
        assert!(w.metadata.managed_fields.is_none());
        let p = w.reduce();
        assert_eq!(p.meta.key(), "ns/p");
        assert_eq!(&*p.meta.labels, &[("a".into(), "1".into()), ("b".into(), "2".into())]);
        assert_eq!(p.meta.controller, Some(("ReplicaSet".into(), "rs".into())));
        assert_eq!(p.body.spec.containers[0].ports[0].container_port, 80);
        assert_eq!(p.body.status.pod_ip, "10.0.0.1");
    }

    #[test]
    fn kubelet_port_uses_the_api_spelling() {
        let w: NodeWire = serde_json::from_str(
            r#"{"metadata":{"name":"n"},"status":{"daemonEndpoints":{"kubeletEndpoint":{"Port":10250}}}}"#,
        )
        .unwrap();
        assert_eq!(w.reduce().body.status.daemon_endpoints.kubelet_endpoint.port, 10250);
    }
}
