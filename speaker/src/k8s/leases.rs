//! The election's Leases (coordination.k8s.io/v1) in the agent's namespace:
//! one per node, renewed often, and one per VIP, the ownership record
//! (holder = owning node, leaseTransitions = term), written only on
//! handover and always with a resourceVersion precondition.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};

use crate::election::{Record, WriteOutcome};

/// Every Lease the agent writes carries this label, and only those are watched.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "speaker");
/// On a node lease: the node.
pub const NODE_LABEL: &str = "speaker.metal/node";
/// On a VIP lease: the address.
pub const VIP_ANNOTATION: &str = "speaker.metal/vip";
/// On a released VIP lease: the node that released it.
pub const RELEASED_BY_ANNOTATION: &str = "speaker.metal/released-by";

pub fn node_lease_name(node: &str) -> String {
    format!("speaker-node-{node}")
}

/// A DNS-1123 name for a VIP's lease: dotted IPv4 with dashes, IPv6 as hex.
pub fn vip_lease_name(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(a) => format!("speaker-vip-{}", a.to_string().replace('.', "-")),
        IpAddr::V6(a) => format!(
            "speaker-vip-{}",
            a.octets()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
    }
}

/// The ownership record a VIP lease holds.
pub fn record(lease: &Lease) -> Option<Record> {
    let rv = lease.metadata.resource_version.clone()?;
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty());
    let term = spec
        .and_then(|s| s.lease_transitions)
        .map_or(0, |t| t.max(0) as u64);
    let released_by = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RELEASED_BY_ANNOTATION).cloned())
        .filter(|_| holder.is_none());
    Some(Record {
        holder,
        term,
        rv,
        released_by,
    })
}

/// What a watched Lease of ours is.
pub enum Kind {
    Node(String),
    Vip(IpAddr),
}

pub fn kind(lease: &Lease) -> Option<Kind> {
    let meta = &lease.metadata;
    if let Some(node) = meta.labels.as_ref().and_then(|l| l.get(NODE_LABEL)) {
        return Some(Kind::Node(node.clone()));
    }
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(VIP_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .map(Kind::Vip)
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Reads and writes the election's Leases. Clones share the node lease
/// last written, which the next renewal starts from.
#[derive(Clone)]
pub struct Leases {
    api: Api<Lease>,
    node: String,
    lease_seconds: i32,
    own: Arc<Mutex<Option<Lease>>>,
}

impl Leases {
    pub fn new(client: Client, namespace: &str, node: &str, lease_duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            node: node.to_string(),
            lease_seconds: lease_duration.as_secs_f64().ceil().max(1.0) as i32,
            own: Arc::new(Mutex::new(None)),
        }
    }

    /// Renews this node's lease from the one last written (read or created
    /// when there is none yet), and keeps the result for the next renewal.
    pub async fn renew(&self) -> kube::Result<()> {
        let current = self.own.lock().ok().and_then(|l| l.clone());
        let written = self.write_own(current).await?;
        if let Ok(mut own) = self.own.lock() {
            *own = Some(written);
        }
        Ok(())
    }

    async fn write_own(&self, current: Option<Lease>) -> kube::Result<Lease> {
        let name = node_lease_name(&self.node);
        let mut lease = match current {
            Some(l) => l,
            None => match self.api.get_opt(&name).await? {
                Some(l) => l,
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            labels: Some(BTreeMap::from([
                                (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                                (NODE_LABEL.to_string(), self.node.clone()),
                            ])),
                            ..Default::default()
                        },
                        spec: Some(self.spec(None)),
                    };
                    return self.api.create(&PostParams::default(), &lease).await;
                }
            },
        };
        lease.spec = Some(self.spec(lease.spec.take()));
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            // Someone else wrote our lease (or our copy is stale): start
            // from the current one next time.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let fresh = self.api.get(&name).await?;
                let mut again = fresh;
                again.spec = Some(self.spec(again.spec.take()));
                self.api
                    .replace(&name, &PostParams::default(), &again)
                    .await
            }
            other => other,
        }
    }

    fn spec(&self, old: Option<LeaseSpec>) -> LeaseSpec {
        let old = old.unwrap_or_default();
        LeaseSpec {
            holder_identity: Some(self.node.clone()),
            lease_duration_seconds: Some(self.lease_seconds),
            acquire_time: old.acquire_time.or_else(|| Some(now())),
            renew_time: Some(now()),
            ..old
        }
    }

    /// The current resourceVersion of `node`'s lease, read afresh.
    pub async fn read_node(&self, node: &str) -> kube::Result<Option<String>> {
        Ok(self
            .api
            .get_opt(&node_lease_name(node))
            .await?
            .and_then(|l| l.metadata.resource_version))
    }

    /// Writes a VIP's record: create when `expect` is None, else replace
    /// only if the resourceVersion is still `expect`.
    pub async fn write_record(
        &self,
        vip: IpAddr,
        expect: Option<String>,
        holder: Option<String>,
        term: u64,
    ) -> WriteOutcome {
        let name = vip_lease_name(vip);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                resource_version: expect.clone(),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY.0.to_string(),
                    MANAGED_BY.1.to_string(),
                )])),
                annotations: Some(
                    [(VIP_ANNOTATION.to_string(), vip.to_string())]
                        .into_iter()
                        .chain(
                            holder
                                .is_none()
                                .then(|| (RELEASED_BY_ANNOTATION.to_string(), self.node.clone())),
                        )
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.clone(),
                lease_transitions: Some(term.min(i32::MAX as u64) as i32),
                acquire_time: holder.as_ref().map(|_| now()),
                ..Default::default()
            }),
        };
        let pp = PostParams::default();
        let result = match expect {
            None => self.api.create(&pp, &lease).await,
            Some(_) => self.api.replace(&name, &pp, &lease).await,
        };
        match result {
            Ok(written) => match record(&written) {
                Some(r) => WriteOutcome::Written(r),
                None => WriteOutcome::Failed,
            },
            // 409: the precondition failed, or it exists already.
            Err(kube::Error::Api(e)) if e.code == 409 => WriteOutcome::Conflict,
            Err(_) => WriteOutcome::Failed,
        }
    }
}
