//! A Kubernetes API server for tests, on loopback: real list/watch JSON for pods, services,
//! endpoints, endpointslices, ingresses, nodes and namespaces. Lists carry a
//! `resourceVersion`; watches stream ADDED/MODIFIED/DELETED (and BOOKMARK on request) lines,
//! answer a too-old `resourceVersion` with a 410 `ERROR` event, apply `labelSelector` and
//! `fieldSelector` (an object that stops matching is sent as DELETED, as the real server does),
//! and can have every open connection dropped. Every request is recorded.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// A request the server saw.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub query: HashMap<String, String>,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
}

impl Request {
    pub fn is_watch(&self) -> bool {
        matches!(self.query.get("watch").map(String::as_str), Some("true" | "1"))
    }
}

#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    resource: String,
    old: Option<Value>,
    new: Option<Value>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// (resource, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    history: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    /// Bumped to close every open watch.
    generation: u64,
    /// Bumped to send a BOOKMARK on every open watch.
    bookmarks: u64,
    requests: Vec<Request>,
}

#[derive(Clone)]
pub struct KubeApi {
    pub addr: String,
    state: Arc<(Mutex<State>, Condvar)>,
}

fn meta_str<'a>(o: &'a Value, field: &str) -> &'a str {
    o["metadata"][field].as_str().unwrap_or("")
}

/// The value a field selector path names (`spec.nodeName`, `metadata.name`, …).
fn field<'a>(o: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(o, |v, k| v.get(k))
}

fn field_matches(o: &Value, sel: &str) -> bool {
    sel.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (path, want, neg) = match term.split_once("!=") {
            Some((p, v)) => (p, v, true),
            None => {
                let (p, v) = term.split_once("==").or_else(|| term.split_once('=')).expect("field term");
                (p, v, false)
            }
        };
        let have = match field(o, path) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(v) if !v.is_null() => v.to_string(),
            _ => String::new(),
        };
        (have == want) != neg
    })
}

fn label_matches(o: &Value, sel: &str) -> bool {
    let labels = &o["metadata"]["labels"];
    sel.split(',').filter(|s| !s.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k].as_str() != Some(v)
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[k].as_str() == Some(v)
        } else if let Some(k) = term.strip_prefix('!') {
            labels.get(k).is_none()
        } else {
            labels.get(term).is_some()
        }
    })
}

/// (resource, namespace) of an API path, or None for paths this server does not serve.
fn route(path: &str) -> Option<(String, Option<String>)> {
    let rest = path.strip_prefix("/api/v1/").or_else(|| {
        let r = path.strip_prefix("/apis/")?;
        let mut it = r.splitn(3, '/');
        let (_group, _version, rest) = (it.next()?, it.next()?, it.next()?);
        Some(rest)
    })?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [res] => Some(((*res).to_owned(), None)),
        ["namespaces", ns, res] => Some(((*res).to_owned(), Some((*ns).to_owned()))),
        _ => None,
    }
}

impl KubeApi {
    pub fn start() -> KubeApi {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let api = KubeApi {
            addr: l.local_addr().unwrap().to_string(),
            state: Arc::new((Mutex::new(State::default()), Condvar::new())),
        };
        let a = api.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let a = a.clone();
                std::thread::spawn(move || a.serve(conn));
            }
        });
        api
    }

    /// A kubeconfig whose current context points at this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{}\nusers:\n- name: test\n  user:\n    token: test-token\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\n",
            self.addr
        )
    }

    fn change(&self, resource: &str, ns: &str, name: &str, new: Option<Value>) {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        let key = (resource.to_owned(), ns.to_owned(), name.to_owned());
        let new = new.map(|mut o| {
            o["metadata"]["resourceVersion"] = json!(rv.to_string());
            o
        });
        let old = match &new {
            Some(o) => st.objects.insert(key, o.clone()),
            None => st.objects.remove(&key),
        };
        st.history.push(Change { rv, resource: resource.to_owned(), old, new });
        cv.notify_all();
    }

    /// Creates or replaces an object (ADDED or MODIFIED).
    pub fn apply(&self, resource: &str, obj: Value) {
        let (ns, name) = (meta_str(&obj, "namespace").to_owned(), meta_str(&obj, "name").to_owned());
        self.change(resource, &ns, &name, Some(obj));
    }

    /// Many objects in one step (no history: for large fixtures listed, not watched).
    pub fn load(&self, resource: &str, objs: impl IntoIterator<Item = Value>) {
        let (lock, _) = &*self.state;
        let mut st = lock.lock().unwrap();
        for mut o in objs {
            st.rv += 1;
            o["metadata"]["resourceVersion"] = json!(st.rv.to_string());
            let key =
                (resource.to_owned(), meta_str(&o, "namespace").to_owned(), meta_str(&o, "name").to_owned());
            st.objects.insert(key, o);
        }
        st.compacted = st.rv;
    }

    pub fn delete(&self, resource: &str, ns: &str, name: &str) {
        self.change(resource, ns, name, None);
    }

    /// Forgets history: watches resuming from an older resourceVersion get 410 Gone. Open
    /// watches are closed too, so they resume (and relist).
    pub fn expire_history(&self) {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap();
        // As after writes the client missed followed by a compaction.
        st.rv += 1;
        st.compacted = st.rv;
        st.generation += 1;
        cv.notify_all();
    }

    /// Drops every open watch connection.
    pub fn drop_connections(&self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap().generation += 1;
        cv.notify_all();
    }

    /// Sends a BOOKMARK on every open watch that allows them.
    pub fn bookmark(&self) {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap();
        st.rv += 1;
        st.bookmarks += 1;
        cv.notify_all();
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.0.lock().unwrap().requests.clone()
    }

    fn serve(&self, conn: TcpStream) {
        let mut r = BufReader::new(conn.try_clone().unwrap());
        let Some((line, headers)) = super::read_head(&mut r) else { return };
        let target = line.split(' ').nth(1).unwrap_or("/").to_owned();
        let (path, q) = target.split_once('?').unwrap_or((&target, ""));
        let query: HashMap<String, String> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        let req = Request { path: path.to_owned(), query, headers };
        self.state.0.lock().unwrap().requests.push(req.clone());
        let Some((resource, ns)) = route(&req.path) else {
            return respond(conn, 404, &json!({"kind":"Status","status":"Failure","code":404}));
        };
        if req.is_watch() {
            self.watch(conn, &req, &resource, ns.as_deref());
        } else {
            self.list(conn, &req, &resource, ns.as_deref());
        }
    }

    fn matches(req: &Request, ns: Option<&str>, o: &Value) -> bool {
        ns.is_none_or(|ns| meta_str(o, "namespace") == ns)
            && req.query.get("labelSelector").is_none_or(|s| label_matches(o, s))
            && req.query.get("fieldSelector").is_none_or(|s| field_matches(o, s))
    }

    fn list(&self, conn: TcpStream, req: &Request, resource: &str, ns: Option<&str>) {
        let st = self.state.0.lock().unwrap();
        let items: Vec<&Value> = st
            .objects
            .iter()
            .filter(|((r, _, _), o)| r == resource && Self::matches(req, ns, o))
            .map(|(_, o)| o)
            .collect();
        let (kind, version) = match resource {
            "pods" => ("PodList", "v1"),
            "services" => ("ServiceList", "v1"),
            "endpoints" => ("EndpointsList", "v1"),
            "nodes" => ("NodeList", "v1"),
            "namespaces" => ("NamespaceList", "v1"),
            "endpointslices" => ("EndpointSliceList", "discovery.k8s.io/v1"),
            "ingresses" => ("IngressList", "networking.k8s.io/v1"),
            _ => ("List", "v1"),
        };
        let body = json!({"kind": kind, "apiVersion": version,
                          "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
        drop(st);
        respond(conn, 200, &body)
    }

    fn watch(&self, mut conn: TcpStream, req: &Request, resource: &str, ns: Option<&str>) {
        let from: u64 = req.query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let bookmarks = req.query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap();
        if from < st.compacted {
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": format!("too old resource version: {from} ({})", st.compacted),
                "reason": "Expired", "code": 410}});
            let _ = writeln!(conn, "{gone}");
            return;
        }
        let (generation, mut seen_bookmarks) = (st.generation, st.bookmarks);
        let mut sent = from;
        loop {
            if st.generation != generation {
                let _ = conn.shutdown(std::net::Shutdown::Both);
                return;
            }
            let mut out = String::new();
            for c in st.history.iter().filter(|c| c.rv > sent && c.resource == resource) {
                let was = c.old.as_ref().filter(|o| Self::matches(req, ns, o));
                let now = c.new.as_ref().filter(|o| Self::matches(req, ns, o));
                let ev = match (was, now) {
                    (None, Some(o)) => json!({"type": "ADDED", "object": o}),
                    (Some(_), Some(o)) => json!({"type": "MODIFIED", "object": o}),
                    (Some(o), None) => {
                        let mut o = c.new.clone().unwrap_or_else(|| o.clone());
                        o["metadata"]["resourceVersion"] = json!(c.rv.to_string());
                        json!({"type": "DELETED", "object": o})
                    }
                    (None, None) => continue,
                };
                out.push_str(&ev.to_string());
                out.push('\n');
            }
            sent = st.rv;
            if bookmarks && st.bookmarks != seen_bookmarks {
                seen_bookmarks = st.bookmarks;
                let b = json!({"type": "BOOKMARK", "object": {"kind": "Bookmark", "apiVersion": "v1",
                    "metadata": {"resourceVersion": st.rv.to_string()}}});
                out.push_str(&b.to_string());
                out.push('\n');
            }
            if !out.is_empty() && (conn.write_all(out.as_bytes()).is_err() || conn.flush().is_err()) {
                return;
            }
            st = cv.wait_timeout(st, Duration::from_millis(200)).unwrap().0;
        }
    }
}

fn respond(mut conn: TcpStream, status: u16, body: &Value) {
    let body = body.to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Objects as the API server returns them.

/// A pod on `node` at `ip` with one container exposing `port` (or no ports when 0).
pub fn pod(ns: &str, name: &str, node: &str, ip: &str, port: u16) -> Value {
    let ports = if port == 0 {
        json!([])
    } else {
        json!([{"name": "metrics", "containerPort": port, "protocol": "TCP"}])
    };
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
            "labels": {"app.kubernetes.io/name": name.split('-').next().unwrap_or(name), "pod-template-hash": "7d9c5b"},
            "annotations": {"prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-rs"), "uid": "x", "controller": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:containers": {}}}}]},
        "spec": {"nodeName": node, "serviceAccountName": "default", "restartPolicy": "Always",
            "containers": [{"name": "app", "image": "example/app:1.0", "ports": ports,
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                "env": [{"name": "A", "value": "b"}], "terminationMessagePath": "/dev/termination-log"}]},
        "status": {"phase": "Running", "podIP": ip, "hostIP": "192.168.0.1",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "app", "containerID": format!("containerd://{name}"), "ready": true, "restartCount": 0}]}})
}
