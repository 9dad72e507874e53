//! The active controller: keeps the [`Allocator`] in step with the cluster
//! and carries out what it decides. Work per change is proportional to the
//! change: a Service event decides that Service (and, when it frees an
//! address, the Services waiting for one); a Namespace's new labels decide
//! the Services in it; only a pool's spec edit decides every Service, as
//! MetalLB does, once per batch of edits (its status, which this process
//! writes, decides nothing).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::{Client, ResourceExt};
use tokio::{task::JoinSet, time::Instant};
use tracing::{info, info_span, warn};

use super::{
    inputs::{self, Change, Input},
    pool_status::PoolStatusWriter,
    status::{StatusWriter, Written},
};
use crate::{
    allocation::{Allocator, Outcome},
    config::ControllerConfig,
    eligibility::{self, ObjectRef},
    k8s::{
        events::{Events, Reported},
        leader::Authority,
    },
    metallb::IPAddressPool,
    metrics::{self, ControllerMetrics},
};

/// A failed status write is tried again after this.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Inputs handled before pool and Namespace edits are applied.
const BATCH: usize = 1024;
/// How often pools' status counters are brought up to date.
const POOL_STATUS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Listed {
    services: bool,
    pools: bool,
    namespaces: bool,
}

pub struct Active {
    alloc: Allocator,
    services: BTreeMap<ObjectRef, Service>,
    pools: BTreeMap<String, IPAddressPool>,
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    listed: Listed,
    /// The allocator has been rebuilt from every Service's status.
    started: bool,
    pools_changed: bool,
    namespaces_changed: BTreeSet<String>,
    writer: StatusWriter,
    pool_status: PoolStatusWriter,
    events: Events,
    reported: Reported,
    /// The last Event message posted on each Service, so each is posted once.
    told: BTreeMap<ObjectRef, String>,
    /// Addresses released by Services no longer ours, until their status
    /// stops showing them (a clearing write can lose to a newer version).
    released: BTreeMap<ObjectRef, Vec<IpAddr>>,
    retry: BTreeSet<ObjectRef>,
    retry_at: Option<Instant>,
    metrics: Arc<Mutex<ControllerMetrics>>,
    inputs: tokio::sync::mpsc::Receiver<Input>,
    /// The watches; aborted when this is dropped.
    _watches: JoinSet<()>,
}

impl Active {
    pub fn start(
        client: &Client,
        cfg: &ControllerConfig,
        authority: Authority,
        events: Events,
        metrics: Arc<Mutex<ControllerMetrics>>,
    ) -> Self {
        let mut watches = JoinSet::new();
        let inputs = inputs::start(client, &cfg.config_namespace, &mut watches);
        Self {
            alloc: Allocator::new(cfg.settings.clone()),
            services: BTreeMap::new(),
            pools: BTreeMap::new(),
            namespace_labels: BTreeMap::new(),
            listed: Listed::default(),
            started: false,
            pools_changed: false,
            namespaces_changed: BTreeSet::new(),
            writer: StatusWriter::new(client.clone(), authority.clone()),
            pool_status: PoolStatusWriter::new(client.clone(), &cfg.config_namespace, authority),
            events,
            reported: Reported::default(),
            told: BTreeMap::new(),
            released: BTreeMap::new(),
            retry: BTreeSet::new(),
            retry_at: None,
            metrics,
            inputs,
            _watches: watches,
        }
    }

    /// Runs until the watches end (never, unless the runtime stops).
    pub async fn run(&mut self) -> Result<()> {
        let mut pool_status = tokio::time::interval(POOL_STATUS_INTERVAL);
        pool_status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry_at = self.retry_at;
            tokio::select! {
                input = self.inputs.recv() => {
                    let Some(input) = input else { bail!("the watches ended") };
                    self.apply(input);
                    for _ in 1..BATCH {
                        match self.inputs.try_recv() {
                            Ok(input) => self.apply(input),
                            Err(_) => break,
                        }
                    }
                    self.flush();
                }
                Some(done) = self.writer.tasks.join_next() => {
                    if let Ok((service, written)) = done {
                        self.writer.finished(&service);
                        self.written(service, written);
                    }
                }
                Some(Ok((pool, ok))) = self.pool_status.tasks.join_next() => {
                    self.pool_status.finished(&pool, ok);
                }
                _ = pool_status.tick(), if self.started => {
                    self.pool_status.launch(&self.alloc.counts(), &self.pools);
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    self.retry_at = None;
                    let keys: Vec<ObjectRef> = std::mem::take(&mut self.retry).into_iter().collect();
                    self.decide(keys);
                }
            }
            self.writer.launch(&self.services);
        }
    }

    fn apply(&mut self, input: Input) {
        match input {
            Input::Service(Change::Applied(svc)) => {
                let key = service_key(&svc);
                self.services.insert(key.clone(), *svc);
                if self.started {
                    self.decide([key]);
                }
            }
            Input::Service(Change::Deleted { namespace, name }) => {
                let key = ObjectRef::new("Service", &namespace, &name);
                self.services.remove(&key);
                self.told.remove(&key);
                self.released.remove(&key);
                self.retry.remove(&key);
                self.writer.forget(&key);
                if self.started && self.alloc.remove(&namespace, &name) {
                    info!(service = %key, "deleted; its addresses are free");
                    let waiting: Vec<ObjectRef> = self.alloc.waiting().cloned().collect();
                    self.decide(waiting);
                }
            }
            Input::Service(Change::Listed) => self.listed.services = true,
            Input::Pool(Change::Applied(pool)) => {
                let name = pool.name_any();
                // A status write (ours) changes nothing the allocator reads.
                if self.pools.get(&name).map(|p| &p.spec) != Some(&pool.spec) {
                    self.pools_changed = true;
                }
                self.pools.insert(name, *pool);
            }
            Input::Pool(Change::Deleted { name, .. }) => {
                self.pools.remove(&name);
                self.pools_changed = true;
            }
            Input::Pool(Change::Listed) => self.listed.pools = true,
            Input::Namespace(Change::Applied(ns)) => self.namespace(&ns),
            Input::Namespace(Change::Deleted { name, .. }) => {
                self.alloc.remove_namespace(&name);
                if self.namespace_labels.remove(&name).is_some() {
                    self.namespaces_changed.insert(name);
                }
            }
            Input::Namespace(Change::Listed) => self.listed.namespaces = true,
        }
    }

    fn namespace(&mut self, ns: &Namespace) {
        let name = ns.name_any();
        let labels = ns.labels().clone();
        if self.namespace_labels.get(&name) != Some(&labels) {
            self.alloc.set_namespace(ns);
            self.namespace_labels.insert(name.clone(), labels);
            self.namespaces_changed.insert(name);
        }
    }

    /// After a batch: starts once everything is listed, then applies pool
    /// and Namespace edits.
    fn flush(&mut self) {
        if !self.started {
            let l = &self.listed;
            if l.services && l.pools && l.namespaces {
                self.begin();
            }
            return;
        }
        if std::mem::take(&mut self.pools_changed) {
            self.set_pools();
            self.namespaces_changed.clear();
            let all: Vec<ObjectRef> = self.services.keys().cloned().collect();
            self.decide(all);
        }
        for ns in std::mem::take(&mut self.namespaces_changed) {
            let keys: Vec<ObjectRef> = self
                .services
                .keys()
                .filter(|k| k.namespace == ns)
                .cloned()
                .collect();
            self.decide(keys);
        }
        self.export();
    }

    /// Rebuilds the allocator from the cluster: pools, then every
    /// Service's current addresses (oldest Service first, so that of two
    /// claiming one address the older keeps it), then decides each one.
    fn begin(&mut self) {
        self.set_pools();
        self.pools_changed = false;
        self.namespaces_changed.clear();
        let mut by_age: Vec<&Service> = self.services.values().collect();
        by_age.sort_by_key(|s| s.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let mut issues = Vec::new();
        for svc in by_age {
            issues.extend(self.alloc.restore(svc));
        }
        self.events.problems(&issues, &mut self.reported);
        self.started = true;
        info!(
            services = self.services.len(),
            pools = self.pools.len(),
            "state rebuilt from the cluster; allocating"
        );
        let all: Vec<ObjectRef> = self.services.keys().cloned().collect();
        self.decide(all);
        metrics::update(&self.metrics, |m| m.synced = true);
        self.export();
    }

    fn set_pools(&mut self) {
        let pools: Vec<IPAddressPool> = self.pools.values().cloned().collect();
        let issues = self.alloc.set_pools(&pools);
        self.events.problems(&issues, &mut self.reported);
    }

    /// Decides each Service in `keys`, and the waiting ones whenever a
    /// decision frees an address.
    fn decide(&mut self, keys: impl IntoIterator<Item = ObjectRef>) {
        let mut queue: VecDeque<ObjectRef> = keys.into_iter().collect();
        let mut queued: BTreeSet<ObjectRef> = queue.iter().cloned().collect();
        while let Some(key) = queue.pop_front() {
            queued.remove(&key);
            if self.decide_one(&key) {
                for w in self.alloc.waiting() {
                    if queued.insert(w.clone()) {
                        queue.push_back(w.clone());
                    }
                }
            }
        }
    }

    /// Decides one Service and carries the outcome out; true when it let
    /// go of an address another Service may be waiting for.
    fn decide_one(&mut self, key: &ObjectRef) -> bool {
        let Some(svc) = self.services.get(key) else {
            return false;
        };
        let _span = info_span!("service", service = %key).entered();
        let before = self.alloc.addresses(&key.namespace, &key.name).to_vec();
        let shown = status_ips(svc);
        let outcome = self.alloc.update(svc);
        if !matches!(outcome, Outcome::Released | Outcome::NotOurs) {
            self.released.remove(key);
        }
        match outcome {
            Outcome::Assigned(ips) => {
                info!(addresses = ?ips, "assigned");
                self.writer.write(key.clone(), &ips);
                let message = format!("{ips:?}");
                if self.told.get(key) != Some(&message) {
                    self.events.allocated(key, &ips);
                    self.told.insert(key.clone(), message);
                }
            }
            Outcome::Unchanged => {}
            Outcome::NotOurs => {
                if let Some(gone) = self.released.get(key) {
                    let rest: Vec<IpAddr> = shown
                        .iter()
                        .filter(|ip| !gone.contains(ip))
                        .copied()
                        .collect();
                    if rest == shown {
                        self.released.remove(key);
                    } else {
                        self.writer.write(key.clone(), &rest);
                    }
                }
            }
            Outcome::Refused { reason, kept } => {
                if shown != kept {
                    self.writer.write(key.clone(), &kept);
                }
                let message = reason.to_string();
                if self.told.get(key) != Some(&message) {
                    warn!(reason = %message, "refused");
                    self.events.allocation_failed(key, &message);
                    metrics::update(&self.metrics, |m| {
                        *m.refusals.entry(reason.kind()).or_default() += 1;
                    });
                    self.told.insert(key.clone(), message);
                }
            }
            Outcome::Released => {
                info!(addresses = ?before, "no longer ours; released");
                // All it shows was ours to write; and what it held may be
                // in a write not yet seen.
                let mut gone = before.clone();
                gone.extend(shown.iter().copied());
                if !shown.is_empty() {
                    self.writer.write(key.clone(), &[]);
                }
                self.released.insert(key.clone(), gone);
                self.told.remove(key);
            }
        }
        let after = self.alloc.addresses(&key.namespace, &key.name);
        before.iter().any(|ip| !after.contains(ip))
    }

    fn written(&mut self, service: ObjectRef, written: Written) {
        match written {
            Written::Ok => metrics::update(&self.metrics, |m| m.status_writes_ok += 1),
            Written::Stale | Written::NotSent => {}
            Written::Failed(why) => {
                warn!(%service, error = %why, "cannot write the Service's status; retrying");
                metrics::update(&self.metrics, |m| m.status_writes_failed += 1);
                self.retry.insert(service);
                self.retry_at
                    .get_or_insert_with(|| Instant::now() + RETRY_AFTER);
            }
        }
    }

    fn export(&self) {
        let counts = self.alloc.counts();
        metrics::update(&self.metrics, |m| m.pools = counts);
    }
}

fn service_key(svc: &Service) -> ObjectRef {
    ObjectRef::new(
        "Service",
        svc.metadata.namespace.as_deref().unwrap_or_default(),
        &svc.name_any(),
    )
}

/// The addresses the status shows, sorted (entries that are not
/// addresses left out).
fn status_ips(svc: &Service) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = eligibility::ingress(svc)
        .iter()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect();
    ips.sort();
    ips
}
