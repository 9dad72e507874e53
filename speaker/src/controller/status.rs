//! Writing `status.loadBalancer.ingress`: one task per write, a few at a
//! time, each at the resourceVersion the decision was made from, and only
//! while this process holds the controller Lease.

use std::{net::IpAddr, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service};
use kube::{Api, Client, api::PostParams};
use tokio::{sync::Semaphore, task::JoinSet, time::timeout};

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
    permits: Arc<Semaphore>,
    pub tasks: JoinSet<(ObjectRef, Written)>,
}

impl StatusWriter {
    pub fn new(client: Client, authority: Authority) -> Self {
        Self {
            client,
            authority,
            permits: Arc::new(Semaphore::new(CONCURRENT_WRITES)),
            tasks: JoinSet::new(),
        }
    }

    /// Makes `svc`'s ingress list exactly `ips`, keeping what else each
    /// entry says (ports, ipMode) for addresses it already lists.
    pub fn write(&mut self, service: ObjectRef, svc: &Service, ips: &[IpAddr]) {
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
        let api: Api<Service> = Api::namespaced(self.client.clone(), &service.namespace);
        let (authority, permits) = (self.authority.clone(), self.permits.clone());
        self.tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return (service, Written::NotSent);
            };
            // Checked after waiting for a permit, just before sending.
            if !authority.holds() {
                return (service, Written::NotSent);
            }
            let name = service.name.clone();
            let sent = timeout(
                WRITE_TIMEOUT,
                api.replace_status(&name, &PostParams::default(), &svc),
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
