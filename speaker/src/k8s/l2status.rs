//! MetalLB's `ServiceL2Status` objects (metallb.io/v1beta1), so that
//! `kubectl get servicel2status -A` answers "who announces what" as MetalLB
//! users expect: one per Service this node announces, in the agent's
//! namespace, named `l2-*`, labelled with the node and the Service, the
//! same in `.status` (written through the status subresource, as the CRD
//! makes `.status` immutable per node and Service).
//!
//! One task writes them, and only when what this node announces changes:
//! it lists this node's objects, deletes those no longer announced, and
//! creates the missing ones (first deleting other nodes' objects for that
//! Service: a takeover leaves the old owner's behind when it died). A
//! failed pass is retried; the API is never waited on by the agent's loop.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use anyhow::{Context as _, Result};
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
        PostParams,
    },
};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::eligibility::ObjectRef;

const NODE: &str = "metallb.io/node";
const SERVICE_NAME: &str = "metallb.io/service-name";
const SERVICE_NAMESPACE: &str = "metallb.io/service-namespace";
/// After a failed pass (API unreachable, say), the next try; doubled up
/// to [`RETRY_MAX`] while passes keep failing.
const RETRY: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Failed passes in a row before the error is logged as a warning.
const WARN_AFTER: u32 = 3;
/// A pass even when nothing changed here: puts back an object deleted by
/// hand or by a node that took a VIP of the Service.
const RESYNC: Duration = Duration::from_secs(60);
/// While the API server does not serve the kind, how often to look again.
const MISSING_RETRY: Duration = Duration::from_secs(60);
/// Each request is given up after this (the pass is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What this node announces: each Service, and what its object says.
pub type Announced = BTreeMap<ObjectRef, Entry>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// The interfaces its L2Advertisement names (none: every interface,
    /// and MetalLB writes none).
    pub interfaces: Vec<String>,
    /// Other nodes holding another of the Service's VIPs (dual-stack, or
    /// shared): their objects stay. Any other node's object is a dead
    /// owner's, deleted when this node starts announcing the Service.
    pub others: BTreeSet<String>,
}

/// The handle the agent's loop tells what it announces.
pub struct L2Statuses(watch::Sender<Announced>);

impl L2Statuses {
    /// Starts the writing task on the current runtime.
    pub fn start(client: Client, namespace: &str, node: &str) -> Self {
        let (tx, rx) = watch::channel(Announced::new());
        let gvk = GroupVersionKind::gvk("metallb.io", "v1beta1", "ServiceL2Status");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "servicel2statuses");
        let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource);
        let writer = Writer {
            api,
            resource,
            node: node.to_string(),
        };
        tokio::spawn(writer.run(rx));
        Self(tx)
    }

    /// This node announces `now`; written only if it changed.
    pub fn set(&self, now: Announced) {
        self.0.send_if_modified(|a| {
            let changed = *a != now;
            *a = now;
            changed
        });
    }
}

struct Writer {
    api: Api<DynamicObject>,
    resource: ApiResource,
    node: String,
}

impl Writer {
    async fn run(self, mut rx: watch::Receiver<Announced>) {
        let (mut failures, mut missing_warned) = (0u32, false);
        // The first pass clears what a predecessor on this node left.
        loop {
            let want = rx.borrow_and_update().clone();
            let wait = match self.sync(&want).await {
                Ok(()) => {
                    failures = 0;
                    missing_warned = false;
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() {
                            return; // the agent is gone
                        },
                        () = tokio::time::sleep(RESYNC) => {}
                    }
                    continue;
                }
                // MetalLB's CRDs before v0.14 lack the kind: say so once.
                Err(e) if is_missing(&e) => {
                    if !std::mem::replace(&mut missing_warned, true) {
                        warn!(
                            "the API server does not serve ServiceL2Status (apply deploy/crds/): not written"
                        );
                    }
                    MISSING_RETRY
                }
                Err(e) => {
                    failures += 1;
                    let error = format!("{e:#}");
                    if failures == WARN_AFTER {
                        warn!(%error, "cannot write ServiceL2Status; retrying");
                    } else {
                        debug!(%error, "cannot write ServiceL2Status; retrying");
                    }
                    RETRY.saturating_mul(1 << failures.min(5)).min(RETRY_MAX)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn sync(&self, want: &Announced) -> Result<()> {
        let ours = self.list(&format!("{NODE}={}", self.node)).await?;
        let mut have: BTreeMap<ObjectRef, DynamicObject> = BTreeMap::new();
        for o in ours {
            match service_of(&o) {
                Some(s) if want.contains_key(&s) && !have.contains_key(&s) => {
                    have.insert(s, o);
                }
                // Not announced here any more, or a duplicate.
                _ => self.delete(&o).await?,
            }
        }
        for (service, entry) in want {
            let status = self.status(service, &entry.interfaces);
            match have.get(service) {
                Some(o) if o.data.get("status") == Some(&status) => {}
                Some(o) => self.write_status(&name_of(o)?, &status).await?,
                None => {
                    let others = self
                        .list(&format!(
                            "{SERVICE_NAME}={},{SERVICE_NAMESPACE}={}",
                            service.name, service.namespace
                        ))
                        .await?;
                    let dead = others.iter().filter(|o| {
                        let node = o.metadata.labels.as_ref().and_then(|l| l.get(NODE));
                        node.is_none_or(|n| *n != self.node && !entry.others.contains(n))
                    });
                    for o in dead {
                        self.delete(o).await?;
                    }
                    let name = self.create(service).await?;
                    self.write_status(&name, &status).await?;
                }
            }
        }
        Ok(())
    }

    fn status(&self, service: &ObjectRef, interfaces: &[String]) -> serde_json::Value {
        let mut status = json!({
            "node": self.node,
            "serviceName": service.name,
            "serviceNamespace": service.namespace,
        });
        if !interfaces.is_empty() {
            let names: Vec<_> = interfaces.iter().map(|n| json!({ "name": n })).collect();
            status["interfaces"] = json!(names);
        }
        status
    }

    async fn list(&self, labels: &str) -> Result<Vec<DynamicObject>> {
        let lp = ListParams::default().labels(labels);
        let list = timed(self.api.list(&lp))
            .await
            .context("listing ServiceL2Status")?;
        Ok(list.items)
    }

    async fn create(&self, service: &ObjectRef) -> Result<String> {
        let mut o = DynamicObject::new("", &self.resource);
        o.metadata.name = None;
        o.metadata.generate_name = Some("l2-".into());
        o.metadata.labels = Some(
            [
                (NODE.to_string(), self.node.clone()),
                (SERVICE_NAME.to_string(), service.name.clone()),
                (SERVICE_NAMESPACE.to_string(), service.namespace.clone()),
            ]
            .into(),
        );
        o.data = json!({ "spec": {} });
        let created = timed(self.api.create(&PostParams::default(), &o))
            .await
            .with_context(|| {
                format!(
                    "creating the ServiceL2Status of {}/{}",
                    service.namespace, service.name
                )
            })?;
        name_of(&created)
    }

    async fn write_status(&self, name: &str, status: &serde_json::Value) -> Result<()> {
        let mut status = status.clone();
        // A merge patch keeps what it does not name: clear stale interfaces.
        if status.get("interfaces").is_none() {
            status["interfaces"] = serde_json::Value::Null;
        }
        let patch = Patch::Merge(json!({ "status": status }));
        timed(self.api.patch_status(name, &PatchParams::default(), &patch))
            .await
            .with_context(|| format!("writing the status of ServiceL2Status {name}"))?;
        Ok(())
    }

    async fn delete(&self, o: &DynamicObject) -> Result<()> {
        let name = name_of(o)?;
        match timed(self.api.delete(&name, &DeleteParams::default())).await {
            Ok(_) => Ok(()),
            // Gone already: what we wanted.
            Err(e) if e.downcast_ref::<kube::Error>().is_some_and(is_not_found) => Ok(()),
            Err(e) => Err(e.context(format!("deleting ServiceL2Status {name}"))),
        }
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// A 404 on a list: the resource itself is not served.
fn is_missing(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<kube::Error>().is_some_and(is_not_found))
        && e.to_string().starts_with("listing")
}

async fn timed<T>(f: impl Future<Output = kube::Result<T>>) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("no answer in {REQUEST_TIMEOUT:?}"),
    }
}

fn name_of(o: &DynamicObject) -> Result<String> {
    o.metadata
        .name
        .clone()
        .context("a ServiceL2Status without a name")
}

/// The Service an object's labels name.
fn service_of(o: &DynamicObject) -> Option<ObjectRef> {
    let labels = o.metadata.labels.as_ref()?;
    Some(ObjectRef::new(
        "Service",
        labels.get(SERVICE_NAMESPACE)?,
        labels.get(SERVICE_NAME)?,
    ))
}
