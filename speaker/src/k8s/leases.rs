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

use crate::election::{OwnLease, Record, RenewOutcome, WriteOutcome};

/// Every Lease the agent writes carries this label, and only those are watched.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "speaker");
/// On a node lease: the node.
pub const NODE_LABEL: &str = "speaker.metal/node";
/// On a VIP lease: the address.
pub const VIP_ANNOTATION: &str = "speaker.metal/vip";
/// On a node lease: the agent process renewing it (empty once released).
pub const INSTANCE_ANNOTATION: &str = "speaker.metal/instance";
/// On a released VIP lease: the node that released it.
pub const RELEASED_BY_ANNOTATION: &str = "speaker.metal/released-by";
/// On a node lease: the peers its node needs a promise from to keep
/// answering through an API outage (comma-separated node names).
pub const WITNESSES_ANNOTATION: &str = "speaker.metal/witnesses";
/// On a node lease: the sequence number of the renewal that wrote it, so
/// its agent knows which of its renewals a version comes from.
pub const RENEWAL_ANNOTATION: &str = "speaker.metal/renewal";
/// On a node lease: its agent stopped for a restart with this version,
/// and keeps its VIPs answered for this many milliseconds past sending
/// it; other nodes wait longer before taking over (docs/election.md).
pub const RESTART_HOLD_ANNOTATION: &str = "speaker.metal/restart-hold";

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

fn annotation<'a>(lease: &'a Lease, key: &str) -> Option<&'a str> {
    lease
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The witnesses a node lease names.
pub fn witnesses(lease: &Lease) -> Vec<String> {
    annotation(lease, WITNESSES_ANNOTATION)
        .unwrap_or_default()
        .split(',')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// How long a node lease's agent keeps answering after stopping for a
/// restart with this version, if it did.
pub fn restart_hold(lease: &Lease) -> Option<Duration> {
    annotation(lease, RESTART_HOLD_ANNOTATION)?
        .parse::<u64>()
        .ok()
        // Bounded like --restart-hold: no arithmetic on it overflows.
        .map(|ms| Duration::from_millis(ms).min(crate::election::MAX_RESTART_HOLD))
}

/// A version of our own node lease as the election orders it.
fn own_lease(lease: &Lease) -> Option<OwnLease> {
    Some(OwnLease {
        rv: lease.metadata.resource_version.clone()?,
        seq: annotation(lease, RENEWAL_ANNOTATION)?.parse().ok()?,
        witnesses: witnesses(lease),
    })
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// A node lease names the agent process renewing it, so that two agents
/// under one node name (a misconfiguration, or a restart racing its
/// predecessor) never both act as that node.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error(
        "another speaker agent (instance {other}) renews the lease of node {node:?}: \
         two agents run under one node name (check --node-name / NODE_NAME)"
    )]
    Duplicate { node: String, other: String },
}

/// Reads and writes the election's Leases. Clones share the node lease
/// last written, which the next renewal starts from.
#[derive(Clone)]
pub struct Leases {
    api: Api<Lease>,
    node: String,
    /// This process, as named in the node lease.
    instance: String,
    lease_seconds: i32,
    own: Arc<Mutex<Option<Lease>>>,
}

/// The instance a node lease names: `Some("")` once released by a clean
/// stop, `None` when it names none (written by an older version).
fn instance_of(lease: &Lease) -> Option<&str> {
    annotation(lease, INSTANCE_ANNOTATION)
}

impl Leases {
    pub fn new(
        client: Client,
        namespace: &str,
        node: &str,
        instance: &str,
        lease_duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            node: node.to_string(),
            instance: instance.to_string(),
            lease_seconds: lease_duration.as_secs_f64().ceil().max(1.0) as i32,
            own: Arc::new(Mutex::new(None)),
        }
    }

    /// Makes this node's lease ours before anything else happens: at once
    /// when there is none, its last agent released it, or it is
    /// `predecessor`'s (an agent of this host that has stopped: see
    /// `dataplane::PinLock`); otherwise only after seeing it unchanged for
    /// `lease_duration` (its renewer has stopped). A lease that changes
    /// meanwhile is renewed by another live agent: [`LeaseError::Duplicate`].
    pub async fn acquire(
        &self,
        lease_duration: Duration,
        predecessor: Option<&str>,
    ) -> Result<(), LeaseError> {
        let name = node_lease_name(&self.node);
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            let created = self.create_own(0, &[], None).await?;
            self.keep(created);
            return Ok(());
        };
        let other = instance_of(&lease).unwrap_or("unknown").to_string();
        let stopped = |o: &str| o.is_empty() || o == self.instance || Some(o) == predecessor;
        if !stopped(&other) {
            let rv = lease.metadata.resource_version.clone();
            // An agent elsewhere under this name that stopped for a restart
            // answers until its hold is out: as long as followers wait.
            let hold = restart_hold(&lease).map_or(Duration::ZERO, |h| h + h / 10);
            let until = tokio::time::Instant::now() + lease_duration.max(hold);
            while tokio::time::Instant::now() < until {
                tokio::time::sleep(lease_duration / 10).await;
                lease = self.api.get(&name).await?;
                if lease.metadata.resource_version != rv {
                    return Err(self.duplicate(&lease));
                }
            }
        }
        // Replaced only at the version seen: a renewal meanwhile fails it.
        // It names no witnesses: this process holds nothing yet. A stopped
        // predecessor's renewal may still land late: read again and retry,
        // as long as the lease is still its.
        for _ in 0..10 {
            match self.write(lease, 0, &[], None).await {
                Ok(written) => {
                    self.keep(written);
                    return Ok(());
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    lease = self.api.get(&name).await?;
                    let now = instance_of(&lease).unwrap_or("unknown");
                    if !(stopped(now) && now == other) {
                        return Err(self.duplicate(&lease));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(self.duplicate(&lease))
    }

    fn duplicate(&self, lease: &Lease) -> LeaseError {
        LeaseError::Duplicate {
            node: self.node.clone(),
            other: instance_of(lease).unwrap_or("unknown").to_string(),
        }
    }

    /// Renews this node's lease at version `base` (the one last written
    /// when `None`; created when there is none yet), naming renewal `seq`
    /// and `witnesses`. A 409 is not retried: the answer carries the lease
    /// as it is, and the next renewal goes from there. A lease another
    /// agent has taken meanwhile is never written.
    pub async fn renew(
        &self,
        base: Option<String>,
        seq: u64,
        witnesses: &[String],
        restart_hold: Option<Duration>,
    ) -> Result<RenewOutcome, LeaseError> {
        let current = self.own.lock().ok().and_then(|l| l.clone());
        let written = match current {
            None => self.create_own(seq, witnesses, restart_hold).await?,
            Some(mut lease) => {
                if base.is_some() {
                    lease.metadata.resource_version = base;
                }
                match self.write(lease, seq, witnesses, restart_hold).await {
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        let fresh = self.api.get(&node_lease_name(&self.node)).await?;
                        if instance_of(&fresh) != Some(self.instance.as_str()) {
                            return Err(self.duplicate(&fresh));
                        }
                        let current = own_lease(&fresh);
                        self.keep(fresh);
                        return Ok(RenewOutcome::Conflict { current });
                    }
                    other => other?,
                }
            }
        };
        let rv = written
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        self.keep(written);
        Ok(RenewOutcome::Renewed { rv })
    }

    /// Marks the node lease released (a clean stop), so a successor on this
    /// node takes it at once.
    pub async fn release_own(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self.own.lock().ok().and_then(|l| l.clone()) else {
            return Ok(());
        };
        let annotations = lease.metadata.annotations.get_or_insert_default();
        annotations.insert(INSTANCE_ANNOTATION.to_string(), String::new());
        annotations.remove(WITNESSES_ANNOTATION);
        let name = node_lease_name(&self.node);
        self.api
            .replace(&name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }

    fn keep(&self, lease: Lease) {
        if let Ok(mut own) = self.own.lock() {
            *own = Some(lease);
        }
    }

    async fn create_own(
        &self,
        seq: u64,
        witnesses: &[String],
        restart_hold: Option<Duration>,
    ) -> kube::Result<Lease> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(node_lease_name(&self.node)),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                    (NODE_LABEL.to_string(), self.node.clone()),
                ])),
                ..Default::default()
            },
            spec: None,
        };
        let lease = self.stamped(lease, seq, witnesses, restart_hold);
        self.api.create(&PostParams::default(), &lease).await
    }

    /// Writes `lease` renewed and naming this instance, at its version.
    async fn write(
        &self,
        lease: Lease,
        seq: u64,
        witnesses: &[String],
        restart_hold: Option<Duration>,
    ) -> kube::Result<Lease> {
        let name = node_lease_name(&self.node);
        let lease = self.stamped(lease, seq, witnesses, restart_hold);
        self.api
            .replace(&name, &PostParams::default(), &lease)
            .await
    }

    fn stamped(
        &self,
        mut lease: Lease,
        seq: u64,
        witnesses: &[String],
        restart_hold: Option<Duration>,
    ) -> Lease {
        lease.spec = Some(self.spec(lease.spec.take()));
        let annotations = lease.metadata.annotations.get_or_insert_default();
        annotations.insert(INSTANCE_ANNOTATION.to_string(), self.instance.clone());
        annotations.insert(RENEWAL_ANNOTATION.to_string(), seq.to_string());
        annotations.insert(WITNESSES_ANNOTATION.to_string(), witnesses.join(","));
        match restart_hold {
            Some(r) => annotations.insert(
                RESTART_HOLD_ANNOTATION.to_string(),
                r.as_millis().to_string(),
            ),
            None => annotations.remove(RESTART_HOLD_ANNOTATION),
        };
        lease
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

    /// The current resourceVersion of `node`'s lease and the witnesses it
    /// names, read afresh.
    pub async fn read_node(
        &self,
        node: &str,
    ) -> kube::Result<Option<(String, Vec<String>, Option<Duration>)>> {
        Ok(self
            .api
            .get_opt(&node_lease_name(node))
            .await?
            .and_then(|l| {
                Some((
                    l.metadata.resource_version.clone()?,
                    witnesses(&l),
                    restart_hold(&l),
                ))
            }))
    }

    /// A VIP's record, read afresh (`None`: there is none).
    pub async fn read_record(&self, vip: IpAddr) -> kube::Result<Option<Record>> {
        Ok(self
            .api
            .get_opt(&vip_lease_name(vip))
            .await?
            .as_ref()
            .and_then(record))
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
