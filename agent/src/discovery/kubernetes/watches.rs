//! Shared watches: one `kube::runtime::watcher` per (cluster, resource, namespace, label
//! selector, field selector), however many jobs use it. Each keeps a cache of reduced objects
//! and wakes its subscribers on every change; it stops when the last subscriber drops it.
//! `status()` reports every live watch for `/metrics` and `/api/v1/targets`.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock, Weak};

use futures_util::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use kube::{Api, Client};
use tokio::sync::Notify;

use super::objects::{Obj, Wire};

/// What identifies a watch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchKey {
    /// Which API server and credentials (the client's identity).
    pub cluster: String,
    pub resource: &'static str,
    /// `None`: all namespaces (and cluster-scoped resources).
    pub namespace: Option<String>,
    pub labels: Option<String>,
    pub fields: Option<String>,
}

/// A watch's cache and state, shared by its subscribers.
#[derive(Debug)]
pub struct Shared<W: Wire> {
    pub key: WatchKey,
    objects: RwLock<HashMap<String, Arc<Obj<W::Body>>>>,
    synced: AtomicBool,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    subscribers: Mutex<Vec<Weak<Notify>>>,
    task: tokio::task::AbortHandle,
}

impl<W: Wire> Drop for Shared<W> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<W: Wire> Shared<W> {
    pub fn objects(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Obj<W::Body>>>> {
        self.objects.read().expect("watch cache lock")
    }

    /// True once the first full list has been applied.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn subscribe(&self, n: &Arc<Notify>) {
        self.subscribers.lock().expect("subscribers lock").push(Arc::downgrade(n));
    }

    fn wake(&self) {
        let mut subs = self.subscribers.lock().expect("subscribers lock");
        subs.retain(|w| match w.upgrade() {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        });
    }
}

/// Status of one live watch.
#[derive(Debug, Clone)]
pub struct WatchStatus {
    pub key: WatchKey,
    pub synced: bool,
    pub objects: usize,
    pub errors: u64,
    pub last_error: Option<String>,
}

trait Status: Send + Sync {
    fn status(&self) -> WatchStatus;
}

impl<W: Wire> Status for Shared<W> {
    fn status(&self) -> WatchStatus {
        WatchStatus {
            key: self.key.clone(),
            synced: self.synced(),
            objects: self.objects().len(),
            errors: self.errors.load(Ordering::Relaxed),
            last_error: self.last_error.lock().expect("error lock").clone(),
        }
    }
}

struct Entry {
    any: Weak<dyn Any + Send + Sync>,
    status: Weak<dyn Status>,
}

static REGISTRY: LazyLock<Mutex<HashMap<WatchKey, Entry>>> = LazyLock::new(Default::default);

/// Every live watch, sorted by key.
pub fn status() -> Vec<WatchStatus> {
    let reg = REGISTRY.lock().expect("registry lock");
    let mut v: Vec<WatchStatus> =
        reg.values().filter_map(|e| e.status.upgrade()).map(|s| s.status()).collect();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

/// The watch for `key`, started on `client` if nobody holds it yet. Must run in a runtime.
pub fn get<W: Wire>(client: &Client, key: WatchKey) -> Arc<Shared<W>> {
    let mut reg = REGISTRY.lock().expect("registry lock");
    if let Some(s) = reg.get(&key).and_then(|e| e.any.upgrade()).and_then(|a| a.downcast::<Shared<W>>().ok())
    {
        return s;
    }
    let shared = Arc::new_cyclic(|weak: &Weak<Shared<W>>| {
        let task = tokio::spawn(drive::<W>(client.clone(), key.clone(), weak.clone()));
        Shared {
            key: key.clone(),
            objects: Default::default(),
            synced: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
            subscribers: Mutex::new(Vec::new()),
            task: task.abort_handle(),
        }
    });
    let any: Arc<dyn Any + Send + Sync> = shared.clone();
    let status: Arc<dyn Status> = shared.clone();
    reg.retain(|_, e| e.any.strong_count() > 0);
    reg.insert(key, Entry { any: Arc::downgrade(&any), status: Arc::downgrade(&status) });
    shared
}

/// Lists, then watches; relists on 410 Gone and reconnects with backoff (the watcher's own
/// logic). Errors are counted and logged; the stream never ends on them.
async fn drive<W: Wire>(client: Client, key: WatchKey, shared: Weak<Shared<W>>) {
    let api: Api<W> = match &key.namespace {
        Some(ns) => Api::namespaced_with(client, ns, &()),
        None => Api::all_with(client, &()),
    };
    // resourceVersion=0 on the list: served from the API server's watch cache, as client-go's
    // reflector does. kube drops resourceVersion=0 when a page size is set (the server ignores
    // limits for it anyway), so no page size.
    let mut cfg = watcher::Config::default().any_semantic();
    cfg.page_size = None;
    if let Some(l) = &key.labels {
        cfg = cfg.labels(l);
    }
    if let Some(f) = &key.fields {
        cfg = cfg.fields(f);
    }
    let mut events = watch_stream(api, cfg).default_backoff().boxed();
    let mut listing: Option<HashMap<String, Arc<Obj<W::Body>>>> = None;
    while let Some(ev) = events.next().await {
        let Some(sh) = shared.upgrade() else { return };
        let changed = match ev {
            Ok(Event::Init) => {
                listing = Some(HashMap::new());
                false
            }
            Ok(Event::InitApply(o)) => {
                let o = o.reduce();
                listing.get_or_insert_with(HashMap::new).insert(o.meta.key(), Arc::new(o));
                false
            }
            Ok(Event::InitDone) => {
                *sh.objects.write().expect("watch cache lock") = listing.take().unwrap_or_default();
                sh.synced.store(true, Ordering::Release);
                *sh.last_error.lock().expect("error lock") = None;
                true
            }
            Ok(Event::Apply(o)) => {
                let o = o.reduce();
                sh.objects.write().expect("watch cache lock").insert(o.meta.key(), Arc::new(o));
                true
            }
            Ok(Event::Delete(o)) => {
                let o = o.reduce();
                sh.objects.write().expect("watch cache lock").remove(&o.meta.key());
                true
            }
            Err(e) => {
                sh.errors.fetch_add(1, Ordering::Relaxed);
                let msg = crate::scrape::fetch::error_chain(&e);
                tracing::warn!(resource = key.resource, namespace = ?key.namespace, error = %msg, "kubernetes_sd: watch failed; retrying with backoff");
                *sh.last_error.lock().expect("error lock") = Some(msg);
                false
            }
        };
        if changed {
            sh.wake();
        }
    }
}
