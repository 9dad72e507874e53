//! The agent's watches: one per kind the plan is made from, each sending
//! what changed, slimmed, to the agent's loop (which keeps the plan up to
//! date with it, eligibility/cluster.rs), and a watch on the election's
//! Leases. Watch errors are
//! retried with backoff, never fatal: an unreachable API server only delays
//! the agent, whose data plane meanwhile expires on its own.

use std::{
    collections::{BTreeSet, HashSet},
    fmt::Debug,
    net::IpAddr,
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::warn;

use super::leases::{self, Kind, MANAGED_BY};
use crate::{
    election::Event,
    eligibility::{
        Settings,
        cluster::{self, Change},
        slim,
    },
    metallb::{IPAddressPool, L2Advertisement},
};

/// Changes to the objects the plan is made from, waiting for the agent's
/// loop at most; a full queue holds the watches back.
pub const CHANGES: usize = 4096;

/// Starts a watch of each kind the plan is made from, each sending its
/// objects, slimmed, as [`Change`]s to `changes` (tasks on the current
/// runtime). MetalLB's objects are read from `config_namespace` only, as
/// MetalLB reads them from its own: pools elsewhere are not ours to
/// announce.
pub fn cluster(
    client: &Client,
    config_namespace: &str,
    settings: &Settings,
    changes: mpsc::Sender<Change>,
) {
    let settings = settings.clone();
    watch_kind(
        Api::<Service>::all(client.clone()),
        cluster::Kind::Services,
        move |s| slim::service(s, &settings),
        Change::Service,
        changes.clone(),
    );
    watch_kind(
        Api::<EndpointSlice>::all(client.clone()),
        cluster::Kind::EndpointSlices,
        |s| Some(slim::slice(s)),
        Change::Slice,
        changes.clone(),
    );
    watch_kind(
        Api::<Node>::all(client.clone()),
        cluster::Kind::Nodes,
        |n| Some(slim::node(n)),
        Change::Node,
        changes.clone(),
    );
    watch_kind(
        Api::<IPAddressPool>::namespaced(client.clone(), config_namespace),
        cluster::Kind::Pools,
        |p| Some(p.clone()),
        Change::Pool,
        changes.clone(),
    );
    watch_kind(
        Api::<L2Advertisement>::namespaced(client.clone(), config_namespace),
        cluster::Kind::Advertisements,
        |a| Some(a.clone()),
        Change::Advertisement,
        changes,
    );
}

/// Watches `api`, sending each object as `project` keeps it (`None`: not
/// kept, as if gone) and, after each complete listing, the removal of
/// what it no longer has, then [`Change::Listed`]. Errors are retried
/// with backoff, never fatal.
fn watch_kind<K>(
    api: Api<K>,
    kind: cluster::Kind,
    project: impl Fn(&K) -> Option<K> + Send + 'static,
    change: fn(cluster::Key, Option<K>) -> Change,
    changes: mpsc::Sender<Change>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        // Objects sent as present, and those a re-list has shown so far.
        let (mut known, mut listed): (HashSet<cluster::Key>, HashSet<cluster::Key>) =
            Default::default();
        while let Some(event) = stream.next().await {
            let mut out = Vec::new();
            match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    let Some(key) = key_of(&o) else { continue };
                    listed.insert(key.clone());
                    let kept = project(&o);
                    match kept.is_some() {
                        true => known.insert(key.clone()),
                        false => known.remove(&key),
                    };
                    out.push(change(key, kept));
                }
                Ok(watcher::Event::Delete(o)) => {
                    if let Some(key) = key_of(&o)
                        && known.remove(&key)
                    {
                        out.push(change(key, None));
                    }
                }
                Ok(watcher::Event::Init) => listed.clear(),
                Ok(watcher::Event::InitDone) => {
                    let gone: Vec<cluster::Key> = known.difference(&listed).cloned().collect();
                    for key in gone {
                        known.remove(&key);
                        out.push(change(key, None));
                    }
                    out.push(Change::Listed(kind));
                }
                Err(e) => {
                    warn!(kind = K::kind(&()).as_ref(), error = %e, "watch failed; retrying");
                }
            }
            for c in out {
                if changes.send(c).await.is_err() {
                    return; // the agent is gone
                }
            }
        }
    });
}

fn key_of<K: Resource>(o: &K) -> Option<cluster::Key> {
    let meta = o.meta();
    Some((
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone()?,
    ))
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
pub fn leases(client: &Client, namespace: &str, events: mpsc::Sender<Event>) {
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
                    match key {
                        Some(k) => events.send(k.event(Some(&l))).await,
                        None => Ok(()),
                    }
                }
                Ok(watcher::Event::Delete(l)) => match Key::of(&l) {
                    Some(k) => {
                        known.remove(&k);
                        events.send(k.event(None)).await
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
                        let _ = events.send(k.event(None)).await;
                    }
                    events.send(Event::RecordsSynced).await
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
