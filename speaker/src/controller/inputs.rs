//! The controller's watches: Services, Namespaces and the config
//! namespace's IPAddressPools, as one bounded stream of changes. A re-list
//! (after a 410 or an outage) reports the objects it no longer has as
//! deleted, so nothing is held for a Service that went away meanwhile.

use std::{collections::BTreeSet, fmt::Debug};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tokio::{sync::mpsc, task::JoinSet};
use tracing::warn;

use crate::metallb::IPAddressPool;

/// Changes queued at most; the watches wait while the loop catches up.
const QUEUE: usize = 4096;

pub enum Change<K> {
    Applied(Box<K>),
    Deleted {
        namespace: String,
        name: String,
    },
    /// A complete list has been delivered (first at start, again after
    /// each re-list).
    Listed,
}

pub enum Input {
    Service(Change<Service>),
    Pool(Change<IPAddressPool>),
    Namespace(Change<Namespace>),
}

/// Starts the watches as tasks in `tasks` (aborted with it).
pub fn start(
    client: &Client,
    config_namespace: &str,
    tasks: &mut JoinSet<()>,
) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tasks.spawn(watch(Api::all(client.clone()), tx.clone(), Input::Service));
    tasks.spawn(watch(
        Api::all(client.clone()),
        tx.clone(),
        Input::Namespace,
    ));
    tasks.spawn(watch(
        Api::namespaced(client.clone(), config_namespace),
        tx,
        Input::Pool,
    ));
    rx
}

async fn watch<K>(api: Api<K>, tx: mpsc::Sender<Input>, wrap: fn(Change<K>) -> Input)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // Objects known before a re-list, to report those it no longer has.
    let (mut known, mut listed) = (BTreeSet::new(), BTreeSet::new());
    let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
    while let Some(event) = stream.next().await {
        let mut out = Vec::new();
        match event {
            Ok(watcher::Event::Apply(mut o) | watcher::Event::InitApply(mut o)) => {
                // Often the largest part of an object, and never read; a
                // write without it leaves the server's as they are.
                o.meta_mut().managed_fields = None;
                known.insert(key(&o));
                listed.insert(key(&o));
                out.push(Change::Applied(Box::new(o)));
            }
            Ok(watcher::Event::Delete(o)) => {
                known.remove(&key(&o));
                let (namespace, name) = key(&o);
                out.push(Change::Deleted { namespace, name });
            }
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitDone) => {
                for (namespace, name) in known.difference(&listed) {
                    out.push(Change::Deleted {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    });
                }
                known = std::mem::take(&mut listed);
                out.push(Change::Listed);
            }
            Err(e) => warn!(kind = K::kind(&()).as_ref(), error = %e, "watch failed; retrying"),
        }
        for change in out {
            if tx.send(wrap(change)).await.is_err() {
                return; // the controller stepped down
            }
        }
    }
}
