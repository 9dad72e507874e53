//! Writing `status.loadBalancer.ingress`: the latest decision per Service
//! waits in a queue (a newer one replaces it), a few writes run at once,
//! one per Service at a time, each built from the newest version seen and
//! sent at its resourceVersion, and only while this process holds the
//! controller Lease.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::IpAddr,
    time::Duration,
};

use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service};
use kube::{Api, Client, api::PostParams};
use tokio::{task::JoinSet, time::timeout};

use crate::{eligibility::ObjectRef, k8s::leader::Authority};

/// Writes in flight at once.
const CONCURRENT_WRITES: usize = 16;
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

pub enum Written {
    Ok,
    /// The Service changed or went away: the watch brings what it is now,
    /// and the decision is made again from that.
    Stale,
    /// Not sent: this process no longer holds the Lease.
    NotSent,
    /// Failed; retry.
    Failed(String),
}

pub struct StatusWriter {
    client: Client,
    authority: Authority,
    /// The addresses each Service's status must show, not yet sent.
    pending: BTreeMap<ObjectRef, Vec<IpAddr>>,
    /// `pending`'s keys, oldest first.
    order: VecDeque<ObjectRef>,
    in_flight: BTreeSet<ObjectRef>,
    pub tasks: JoinSet<(ObjectRef, Written)>,
}

impl StatusWriter {
    pub fn new(client: Client, authority: Authority) -> Self {
        Self {
            client,
            authority,
            pending: BTreeMap::new(),
            order: VecDeque::new(),
            in_flight: BTreeSet::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Queues `ips` as what `service`'s status must show.
    pub fn write(&mut self, service: ObjectRef, ips: &[IpAddr]) {
        if self.pending.insert(service.clone(), ips.to_vec()).is_none() {
            self.order.push_back(service);
        }
    }

    /// Drops what was queued for a Service that is gone.
    pub fn forget(&mut self, service: &ObjectRef) {
        self.pending.remove(service);
    }

    /// A write finished: the Service may be written again.
    pub fn finished(&mut self, service: &ObjectRef) {
        self.in_flight.remove(service);
    }

    /// Starts queued writes while fewer than the limit run, each from the
    /// newest version of its Service in `services`.
    pub fn launch(&mut self, services: &BTreeMap<ObjectRef, Service>) {
        let mut busy = Vec::new();
        while self.tasks.len() < CONCURRENT_WRITES {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            if self.in_flight.contains(&key) {
                busy.push(key);
                continue;
            }
            let (Some(ips), Some(svc)) = (self.pending.remove(&key), services.get(&key)) else {
                continue;
            };
            self.in_flight.insert(key.clone());
            self.spawn(key, with_ingress(svc, &ips));
        }
        // Written once the one in flight is done.
        for key in busy.into_iter().rev() {
            self.order.push_front(key);
        }
    }

    fn spawn(&mut self, service: ObjectRef, svc: Service) {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &service.namespace);
        let authority = self.authority.clone();
        self.tasks.spawn(async move {
            // Checked just before sending.
            if !authority.holds() {
                return (service, Written::NotSent);
            }
            let sent = timeout(
                WRITE_TIMEOUT,
                api.replace_status(&service.name, &PostParams::default(), &svc),
            )
            .await;
            let written = match sent {
                Ok(Ok(_)) => Written::Ok,
                Ok(Err(kube::Error::Api(e))) if e.code == 409 || e.code == 404 => Written::Stale,
                Ok(Err(e)) => Written::Failed(e.to_string()),
                Err(_) => Written::Failed("the API server did not answer in time".into()),
            };
            (service, written)
        });
    }
}

/// `svc` with its ingress list exactly `ips`, keeping what else each
/// entry says (ports, ipMode) for addresses it already lists.
fn with_ingress(svc: &Service, ips: &[IpAddr]) -> Service {
    let mut svc = svc.clone();
    let status = svc.status.get_or_insert_default();
    let lb = status
        .load_balancer
        .get_or_insert_with(LoadBalancerStatus::default);
    let old = lb.ingress.take().unwrap_or_default();
    let ingress: Vec<LoadBalancerIngress> = ips
        .iter()
        .map(|ip| {
            let ip = ip.to_string();
            old.iter()
                .find(|e| e.ip.as_deref() == Some(&ip))
                .cloned()
                .unwrap_or(LoadBalancerIngress {
                    ip: Some(ip),
                    ..Default::default()
                })
        })
        .collect();
    lb.ingress = (!ingress.is_empty()).then_some(ingress);
    svc
}
