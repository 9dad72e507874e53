//! A stand-in for the Kubernetes API server, for integration tests: a
//! generic JSON object store behind the real URL layout, close enough that
//! kube-rs works against it unchanged (get/list/create/replace/patch/delete,
//! watches with bookmarks, 409 conflicts, 410 on compacted history), plus
//! the faults and counters tests need.
//!
//! It runs on its own tokio runtime in background threads, so every method
//! here is plain synchronous code, callable from sync tests and from inside
//! other runtimes alike. Dropping the server stops everything.
//!
//! Known differences from a real API server: no authentication, admission
//! or schema validation; no discovery endpoints; finalizers and
//! ownerReferences are ignored (DELETE removes at once, deleting a
//! namespace leaves its objects); lists ignore `resourceVersion` (always the
//! current state) and `limit`/`continue` (one page); strategic merge patch
//! and server-side apply are merge patches (no managedFields, apply bodies
//! must be JSON); create keeps a given `.status`; field selectors know only
//! `metadata.name` and `metadata.namespace`; core and `events.k8s.io`
//! Events are stored apart; `dryRun` is refused.

mod faults;
mod http;
mod listener;
mod patch;
mod resources;
mod selector;
mod stats;
mod status;
mod store;
mod watch;

use std::{
    io,
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use serde_json::{Value, json};

pub use faults::Match;
pub use listener::Listener;
pub use patch::PatchKind;
pub use resources::{
    ENDPOINT_SLICES, EVENTS, EVENTS_V1, Gvr, IP_ADDRESS_POOLS, L2_ADVERTISEMENTS, LEASES,
    NAMESPACES, NODES, RESOURCES, ResourceKind, SERVICE_L2_STATUSES, SERVICES,
};
pub use stats::{Access, Counts, Stats};
pub use status::{ApiError, Details};
use store::{Part, Store};

/// Settings of a stand-in.
#[derive(Clone, Debug)]
pub struct Options {
    /// How many changes are kept for watches to resume from.
    pub history_limit: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Resources answered 404 as by a server that has not got them (an
    /// older Kubernetes, CRDs not applied).
    pub unserved: Vec<Gvr>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(1),
            unserved: Vec::new(),
        }
    }
}

/// State shared by the HTTP side and the handle.
pub(crate) struct Shared {
    store: Mutex<Store>,
    faults: Mutex<faults::Faults>,
    stats: Mutex<Stats>,
    /// Bumped to end every open watch stream.
    drop_watches: tokio::sync::watch::Sender<u64>,
    bookmark_interval: Duration,
    unserved: Vec<Gvr>,
}

/// A lock that survives a panicked holder: the data stays usable for the
/// other requests and the test.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct ApiServer {
    shared: Arc<Shared>,
    listeners: Mutex<Vec<Listener>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ApiServer {
    /// Starts a stand-in with default options. Panics when no runtime can be
    /// started (an environment problem, not a test failure).
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("apiserver")
            .enable_all()
            .build()
            .expect("cannot start the API stand-in's tokio runtime");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(options.history_limit)),
            faults: Mutex::default(),
            stats: Mutex::default(),
            drop_watches: tokio::sync::watch::Sender::new(0),
            bookmark_interval: options.bookmark_interval,
            unserved: options.unserved,
        });
        Self {
            shared,
            listeners: Mutex::default(),
            runtime: Some(runtime),
        }
    }

    /// A new listener on an OS-assigned port of 127.0.0.1, serving this
    /// store until the server is dropped. Panics when no port can be bound.
    pub fn listener(&self) -> Listener {
        let rt = self.runtime.as_ref().map(|rt| rt.handle().clone());
        let listener = rt
            .ok_or_else(|| io::Error::other("stopped"))
            .and_then(|rt| Listener::start(self.shared.clone(), &rt))
            .expect("cannot bind a listener on 127.0.0.1");
        lock(&self.listeners).push(listener.clone());
        listener
    }

    /// Writes a kubeconfig for `listener` whose context's namespace is `default`.
    pub fn write_kubeconfig(&self, listener: &Listener, path: &Path) -> io::Result<()> {
        self.write_kubeconfig_with_namespace(listener, path, "default")
    }

    /// Writes a kubeconfig (as JSON, which is YAML too) for `listener`: plain
    /// http, a user with no credentials, and `namespace` as the default.
    pub fn write_kubeconfig_with_namespace(
        &self,
        listener: &Listener,
        path: &Path,
        namespace: &str,
    ) -> io::Result<()> {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": listener.url()}}],
            "users": [{"name": "stand-in", "user": {}}],
            "contexts": [{
                "name": "stand-in",
                "context": {"cluster": "stand-in", "user": "stand-in", "namespace": namespace},
            }],
            "current-context": "stand-in",
            "preferences": {},
        });
        std::fs::write(path, format!("{config:#}\n"))
    }

    // --- Faults ---

    /// Delays every request that `m` matches by `d` (delays add up).
    pub fn delay(&self, m: Match, d: Duration) {
        lock(&self.shared.faults).add_delay(m, d);
    }

    /// Delays only the next `count` requests that `m` matches by `d`.
    pub fn delay_next(&self, m: Match, count: u32, d: Duration) {
        lock(&self.shared.faults).add_next_delay(m, count, d);
    }

    /// Answers the next `count` requests that `m` matches with HTTP `status`
    /// and a Status body, without serving them.
    pub fn fail_next(&self, m: Match, count: u32, status: u16) {
        lock(&self.shared.faults).add_failures(m, count, status);
    }

    /// Removes every delay, pending failure and stall.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Ends every open watch stream now (clients see the stream end and
    /// watch again).
    pub fn drop_watches(&self) {
        self.shared.drop_watches.send_modify(|n| *n += 1);
    }

    /// Holds back watch events (and bookmarks) for `d`; they are delivered
    /// afterwards, in order. Writes keep succeeding meanwhile.
    pub fn stall_watches(&self, d: Duration) {
        lock(&self.shared.faults).stall(d);
    }

    // --- Observation ---

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    pub fn reset_stats(&self) {
        *lock(&self.shared.stats) = Stats::default();
    }

    /// The current (newest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).resource_version()
    }

    /// Drops the change history: a watch resuming from any earlier
    /// resourceVersion gets 410 Expired and must list again.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    // --- Direct store access (same code paths as HTTP, not counted in stats) ---

    /// Creates an object; `ns` is ignored for cluster-scoped resources.
    pub fn create(&self, gvr: &Gvr, ns: Option<&str>, obj: Value) -> Result<Value, ApiError> {
        lock(&self.shared.store).create(kind(gvr)?, ns, obj)
    }

    pub fn get(&self, gvr: &Gvr, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        lock(&self.shared.store).get(kind(gvr)?, ns, name)
    }

    /// The objects in `ns`, or in all namespaces with `None`.
    pub fn list(&self, gvr: &Gvr, ns: Option<&str>) -> Result<Vec<Value>, ApiError> {
        Ok(lock(&self.shared.store)
            .list(kind(gvr)?, ns, &Default::default())
            .0)
    }

    /// Replaces the object named in `obj` (keeping `.status` when the
    /// resource has a status subresource). A set resourceVersion must match.
    pub fn replace(&self, gvr: &Gvr, ns: Option<&str>, obj: Value) -> Result<Value, ApiError> {
        self.put(gvr, ns, obj, Part::Main)
    }

    /// Replaces only `.status` of the object named in `obj`.
    pub fn replace_status(
        &self,
        gvr: &Gvr,
        ns: Option<&str>,
        obj: Value,
    ) -> Result<Value, ApiError> {
        self.put(gvr, ns, obj, Part::Status)
    }

    /// Patches an object (the main resource) as a PATCH request would.
    pub fn patch(
        &self,
        gvr: &Gvr,
        ns: Option<&str>,
        name: &str,
        kind_: PatchKind,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        Ok(lock(&self.shared.store)
            .patch(kind(gvr)?, ns, name, kind_, patch, Part::Main)?
            .0)
    }

    pub fn delete(&self, gvr: &Gvr, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        lock(&self.shared.store).delete(kind(gvr)?, ns, name, None, None)
    }

    fn put(&self, gvr: &Gvr, ns: Option<&str>, obj: Value, part: Part) -> Result<Value, ApiError> {
        let name = obj["metadata"]["name"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request("metadata.name is required"))?
            .to_string();
        lock(&self.shared.store).replace(kind(gvr)?, ns, &name, obj, part)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // Does not wait, so dropping is fine inside another runtime too.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn kind(gvr: &Gvr) -> Result<&'static ResourceKind, ApiError> {
    gvr.kind().ok_or_else(ApiError::no_route)
}
