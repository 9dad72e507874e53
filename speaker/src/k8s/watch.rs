//! The agent's watches: reflectors (kube-runtime) over the objects the plan
//! is made from, and a watch on the election's Leases. Watch errors are
//! retried with backoff, never fatal: an unreachable API server only delays
//! the agent, whose data plane meanwhile expires on its own.

use std::{collections::BTreeSet, fmt::Debug, net::IpAddr, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch as tokio_watch};
use tracing::warn;

use super::leases::{self, Kind, MANAGED_BY};
use crate::{
    election::Event,
    eligibility::Snapshot,
    metallb::{IPAddressPool, L2Advertisement},
};

/// The stores behind the plan; `changed` ticks whenever any of them does.
pub struct ClusterStores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    pools: Store<IPAddressPool>,
    advertisements: Store<L2Advertisement>,
    pub changed: tokio_watch::Receiver<u64>,
}

impl ClusterStores {
    /// Starts the reflectors (tasks on the current runtime). MetalLB's
    /// objects are read from `config_namespace` only, as MetalLB reads
    /// them from its own: pools elsewhere are not ours to announce.
    pub fn start(client: &Client, config_namespace: &str) -> Self {
        let (tx, changed) = tokio_watch::channel(0u64);
        Self {
            services: reflect(Api::all(client.clone()), tx.clone()),
            slices: reflect(Api::all(client.clone()), tx.clone()),
            nodes: reflect(Api::all(client.clone()), tx.clone()),
            pools: reflect(
                Api::namespaced(client.clone(), config_namespace),
                tx.clone(),
            ),
            advertisements: reflect(Api::namespaced(client.clone(), config_namespace), tx),
            changed,
        }
    }

    /// Node `name` as last seen.
    pub fn node(&self, name: &str) -> Option<std::sync::Arc<Node>> {
        self.nodes
            .get(&kube::runtime::reflector::ObjectRef::new(name))
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            services: owned(&self.services),
            endpoint_slices: owned(&self.slices),
            nodes: owned(&self.nodes),
            pools: owned(&self.pools),
            advertisements: owned(&self.advertisements),
        }
    }

    /// Whether every reflector has listed once (a plan before that would
    /// withdraw VIPs that are merely not loaded yet).
    pub fn ready(&self) -> bool {
        // A Store is ready once its writer applied the first complete list.
        futures::FutureExt::now_or_never(async {
            self.services.wait_until_ready().await.is_ok()
                && self.slices.wait_until_ready().await.is_ok()
                && self.nodes.wait_until_ready().await.is_ok()
                && self.pools.wait_until_ready().await.is_ok()
                && self.advertisements.wait_until_ready().await.is_ok()
        })
        .unwrap_or(false)
    }
}

fn owned<K: Clone + kube::runtime::reflector::Lookup>(store: &Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.state().iter().map(|o| (**o).clone()).collect()
}

fn reflect<K>(api: Api<K>, changed: tokio_watch::Sender<u64>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.send_modify(|n| *n += 1),
                Err(e) => warn!(kind = K::kind(&()).as_ref(), error = %e, "watch failed; retrying"),
            }
        }
    });
    store
}

/// Retries of the lease watch: at most about a second apart, not the 30 s
/// kube-runtime allows by default. An owner names as witnesses only the
/// peers whose leases it saw renewed, so after an outage it can hold again
/// only once this watch is back; a second outage soon after the first
/// must find the witnesses named. A label-selected list of small objects,
/// retried no more often than the agent renews its own lease.
fn lease_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_millis(500))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// Watches the election's Leases in `namespace` and feeds them to the
/// election as events, deletions included (also those a re-list implies).
pub fn leases(client: &Client, namespace: &str, events: mpsc::UnboundedSender<Event>) {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let cfg = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let stream = watcher(api, cfg).backoff(lease_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        // Objects known before a re-list, to report those it no longer has.
        let (mut known, mut listed): (BTreeSet<Key>, BTreeSet<Key>) = Default::default();
        while let Some(event) = stream.next().await {
            let sent = match event {
                Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => {
                    let key = Key::of(&l);
                    if let Some(k) = &key {
                        known.insert(k.clone());
                        listed.insert(k.clone());
                    }
                    key.map_or(Ok(()), |k| events.send(k.event(Some(&l))))
                }
                Ok(watcher::Event::Delete(l)) => match Key::of(&l) {
                    Some(k) => {
                        known.remove(&k);
                        events.send(k.event(None))
                    }
                    None => Ok(()),
                },
                Ok(watcher::Event::Init) => {
                    listed.clear();
                    Ok(())
                }
                Ok(watcher::Event::InitDone) => {
                    let gone: Vec<Key> = known.difference(&listed).cloned().collect();
                    for k in gone {
                        known.remove(&k);
                        let _ = events.send(k.event(None));
                    }
                    events.send(Event::RecordsSynced)
                }
                Err(e) => {
                    warn!(error = %e, "lease watch failed; retrying");
                    Ok(())
                }
            };
            if sent.is_err() {
                return; // the agent is gone
            }
        }
    });
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Node(String),
    Vip(IpAddr),
}

impl Key {
    fn of(lease: &Lease) -> Option<Self> {
        match leases::kind(lease)? {
            Kind::Node(n) => Some(Key::Node(n)),
            Kind::Vip(v) => Some(Key::Vip(v)),
        }
    }

    fn event(&self, lease: Option<&Lease>) -> Event {
        match self {
            Key::Node(node) => Event::NodeLease {
                node: node.clone(),
                rv: lease.and_then(|l| l.metadata.resource_version.clone()),
                witnesses: lease.map(leases::witnesses).unwrap_or_default(),
                restart_hold: lease.and_then(leases::restart_hold),
            },
            Key::Vip(vip) => Event::Record {
                vip: *vip,
                record: lease.and_then(leases::record),
            },
        }
    }
}
