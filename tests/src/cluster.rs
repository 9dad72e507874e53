//! The Kubernetes API the integration tests talk to: a real cluster when
//! `SPEAKER_TEST_KUBECONFIG` names a kubeconfig, else the stand-in
//! (`crate::apiserver`). Tests see both the same way: a kubeconfig per
//! node, a namespace of their own, and sync object access.

use std::{
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use anyhow::{Context as _, Result};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    core::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde_json::{Value, json};

use crate::apiserver::{ApiServer, Gvr, Listener, NAMESPACES};

pub struct Cluster {
    backend: Backend,
    namespace: String,
    /// Holds the stand-in's kubeconfigs; removed on drop.
    dir: PathBuf,
    kubeconfigs: Vec<PathBuf>,
}

enum Backend {
    StandIn {
        server: ApiServer,
        listeners: Vec<Listener>,
    },
    Real {
        client: Client,
        runtime: tokio::runtime::Runtime,
        /// Cluster-scoped objects the test created, deleted on drop (the
        /// namespace takes the others with it).
        created: Mutex<Vec<(Gvr, String)>>,
    },
}

impl Cluster {
    /// A real cluster when `SPEAKER_TEST_KUBECONFIG` is set (in a fresh
    /// namespace, deleted on drop), else a stand-in with one listener per
    /// node, so each node can be cut off on its own.
    pub fn from_env(nodes: usize) -> Result<Self> {
        Self::from_env_binding(nodes, |_, bind| Ok(bind()))
    }

    /// As [`Cluster::from_env`], for nodes in network namespaces: node `i`'s
    /// listener is bound inside `namespaces[i]`, on its own loopback, so an
    /// agent there reaches the stand-in at 127.0.0.1 and closing that
    /// listener cuts off that node alone.
    pub fn from_env_in(namespaces: &[&crate::netns::Netns]) -> Result<Self> {
        Self::from_env_binding(namespaces.len(), |i, bind| namespaces[i].enter(bind))
    }

    fn from_env_binding(
        nodes: usize,
        in_node: impl Fn(usize, &(dyn Fn() -> Listener + Sync)) -> Result<Listener>,
    ) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let namespace = format!("speaker-test-{id}");
        let dir = std::env::temp_dir().join(format!("speaker-cluster-{id}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;

        let (backend, kubeconfigs) = if let Some(path) = std::env::var_os("SPEAKER_TEST_KUBECONFIG")
        {
            let path = PathBuf::from(path);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let client = runtime
                .block_on(async {
                    let kubeconfig = Kubeconfig::read_from(&path)?;
                    let config = kube::Config::from_custom_kubeconfig(
                        kubeconfig,
                        &KubeConfigOptions::default(),
                    )
                    .await?;
                    anyhow::Ok(Client::try_from(config)?)
                })
                .with_context(|| format!("cannot use the kubeconfig {}", path.display()))?;
            let backend = Backend::Real {
                client,
                runtime,
                created: Mutex::default(),
            };
            (backend, vec![path; nodes.max(1)])
        } else {
            let server = ApiServer::start();
            let mut listeners = Vec::new();
            let mut kubeconfigs = Vec::new();
            for node in 0..nodes.max(1) {
                let listener = in_node(node, &|| server.listener())?;
                let path = dir.join(format!("node{node}.kubeconfig"));
                server.write_kubeconfig_with_namespace(&listener, &path, &namespace)?;
                listeners.push(listener);
                kubeconfigs.push(path);
            }
            (Backend::StandIn { server, listeners }, kubeconfigs)
        };
        let cluster = Self {
            backend,
            namespace,
            dir,
            kubeconfigs,
        };
        cluster.create(
            &NAMESPACES,
            json!({"metadata": {"name": cluster.namespace}}),
        )?;
        Ok(cluster)
    }

    /// The stand-in, for tests that inject faults or read counters. Such
    /// tests need it: they fail with a clear message against a real cluster.
    pub fn stand_in(&self) -> Option<&ApiServer> {
        match &self.backend {
            Backend::StandIn { server, .. } => Some(server),
            Backend::Real { .. } => None,
        }
    }

    /// The stand-in, for tests that cannot run against a real cluster
    /// (fault injection, counters); panics with a clear message otherwise.
    pub fn require_stand_in(&self) -> &ApiServer {
        self.stand_in().expect(
            "this test needs the API stand-in (it injects faults or reads counters): \
             unset SPEAKER_TEST_KUBECONFIG to run it",
        )
    }

    /// The listener node `node` talks through (stand-in only): closing it
    /// cuts that node off the API.
    pub fn node_listener(&self, node: usize) -> Option<&Listener> {
        match &self.backend {
            Backend::StandIn { listeners, .. } => listeners.get(node),
            Backend::Real { .. } => None,
        }
    }

    /// The kubeconfig for node `node` (panics past the number of nodes).
    /// With a real cluster every node gets `SPEAKER_TEST_KUBECONFIG`
    /// itself, whose default namespace is not `namespace()`: pass the
    /// namespace explicitly.
    pub fn kubeconfig(&self, node: usize) -> &Path {
        &self.kubeconfigs[node]
    }

    /// The test's own namespace, where namespaced objects go.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn create(&self, gvr: &Gvr, obj: Value) -> Result<Value> {
        match &self.backend {
            Backend::StandIn { server, .. } => {
                Ok(server.create(gvr, Some(&self.namespace), obj)?)
            }
            Backend::Real {
                runtime, created, ..
            } => {
                let api = self.api(gvr)?;
                let obj: DynamicObject = serde_json::from_value(with_type(gvr, obj)?)?;
                let made = runtime.block_on(api.create(&PostParams::default(), &obj))?;
                if !is_namespaced(gvr)? {
                    let name = made.metadata.name.clone().unwrap_or_default();
                    lock(created).push((*gvr, name));
                }
                Ok(serde_json::to_value(made)?)
            }
        }
    }

    /// Creates a namespaced object in `namespace`, creating the namespace
    /// first (it goes when the test ends, with a real cluster).
    pub fn create_in(&self, gvr: &Gvr, namespace: &str, obj: Value) -> Result<Value> {
        if self.get(&NAMESPACES, namespace)?.is_none() {
            self.create(&NAMESPACES, json!({"metadata": {"name": namespace}}))?;
        }
        match &self.backend {
            Backend::StandIn { server, .. } => Ok(server.create(gvr, Some(namespace), obj)?),
            Backend::Real { runtime, .. } => {
                let api = self.api_in(gvr, namespace)?;
                let obj: DynamicObject = serde_json::from_value(with_type(gvr, obj)?)?;
                let made = runtime.block_on(api.create(&PostParams::default(), &obj))?;
                Ok(serde_json::to_value(made)?)
            }
        }
    }

    /// The object, or `None` when it does not exist.
    pub fn get(&self, gvr: &Gvr, name: &str) -> Result<Option<Value>> {
        match &self.backend {
            Backend::StandIn { server, .. } => match server.get(gvr, Some(&self.namespace), name) {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.code == 404 => Ok(None),
                Err(e) => Err(e.into()),
            },
            Backend::Real { runtime, .. } => {
                let found = runtime.block_on(self.api(gvr)?.get_opt(name))?;
                Ok(found.map(serde_json::to_value).transpose()?)
            }
        }
    }

    /// The objects in the test's namespace (all of them for cluster-scoped
    /// resources).
    pub fn list(&self, gvr: &Gvr) -> Result<Vec<Value>> {
        self.list_in(gvr, &self.namespace)
    }

    /// The objects of a namespaced resource in `namespace` (Events about
    /// cluster-scoped objects land in `default`).
    pub fn list_in(&self, gvr: &Gvr, namespace: &str) -> Result<Vec<Value>> {
        match &self.backend {
            Backend::StandIn { server, .. } => Ok(server.list(gvr, Some(namespace))?),
            Backend::Real { runtime, .. } => {
                let list =
                    runtime.block_on(self.api_in(gvr, namespace)?.list(&ListParams::default()))?;
                Ok(list
                    .items
                    .into_iter()
                    .map(serde_json::to_value)
                    .collect::<Result<_, _>>()?)
            }
        }
    }

    /// Replaces the object named in `obj`; a set resourceVersion must match.
    pub fn replace(&self, gvr: &Gvr, obj: Value) -> Result<Value> {
        self.put(gvr, obj, false)
    }

    /// Replaces only the status of the object named in `obj`.
    pub fn replace_status(&self, gvr: &Gvr, obj: Value) -> Result<Value> {
        self.put(gvr, obj, true)
    }

    pub fn delete(&self, gvr: &Gvr, name: &str) -> Result<()> {
        match &self.backend {
            Backend::StandIn { server, .. } => {
                server.delete(gvr, Some(&self.namespace), name)?;
            }
            Backend::Real { runtime, .. } => {
                runtime.block_on(self.api(gvr)?.delete(name, &DeleteParams::default()))?;
            }
        }
        Ok(())
    }

    fn put(&self, gvr: &Gvr, obj: Value, status: bool) -> Result<Value> {
        match &self.backend {
            Backend::StandIn { server, .. } => {
                let ns = Some(self.namespace.as_str());
                Ok(if status {
                    server.replace_status(gvr, ns, obj)?
                } else {
                    server.replace(gvr, ns, obj)?
                })
            }
            Backend::Real { runtime, .. } => {
                let api = self.api(gvr)?;
                let name = obj["metadata"]["name"]
                    .as_str()
                    .context("metadata.name is required")?;
                let pp = PostParams::default();
                let typed: DynamicObject = serde_json::from_value(with_type(gvr, obj.clone())?)?;
                let done = if status {
                    runtime.block_on(api.replace_status(name, &pp, &typed))?
                } else {
                    runtime.block_on(api.replace(name, &pp, &typed))?
                };
                Ok(serde_json::to_value(done)?)
            }
        }
    }

    /// A kube-rs API for `gvr` in the test's namespace (real cluster only).
    fn api(&self, gvr: &Gvr) -> Result<Api<DynamicObject>> {
        self.api_in(gvr, &self.namespace)
    }

    fn api_in(&self, gvr: &Gvr, namespace: &str) -> Result<Api<DynamicObject>> {
        let Backend::Real { client, .. } = &self.backend else {
            anyhow::bail!("not a real cluster");
        };
        let kind = gvr
            .kind()
            .with_context(|| format!("unknown resource {}", gvr.qualified()))?;
        let gvk = GroupVersionKind::gvk(gvr.group, gvr.version, kind.kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, gvr.resource);
        Ok(if kind.namespaced {
            Api::namespaced_with(client.clone(), namespace, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        })
    }
}

/// Real API servers want `kind` and `apiVersion` in every body.
fn with_type(gvr: &Gvr, mut obj: Value) -> Result<Value> {
    let kind = gvr
        .kind()
        .with_context(|| format!("unknown resource {}", gvr.qualified()))?;
    let map = obj
        .as_object_mut()
        .context("an object must be a JSON object")?;
    map.entry("kind").or_insert_with(|| json!(kind.kind));
    map.entry("apiVersion")
        .or_insert_with(|| json!(gvr.api_version()));
    Ok(obj)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn is_namespaced(gvr: &Gvr) -> Result<bool> {
    Ok(gvr
        .kind()
        .with_context(|| format!("unknown resource {}", gvr.qualified()))?
        .namespaced)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Backend::Real {
            runtime, created, ..
        } = &self.backend
        {
            // Newest first: the test's namespace (created first) goes last.
            let created = std::mem::take(&mut *lock(created));
            for (gvr, name) in created.into_iter().rev() {
                if let Ok(api) = self.api(&gvr) {
                    let _ = runtime.block_on(api.delete(&name, &DeleteParams::background()));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
