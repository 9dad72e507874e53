//! One active `speaker controller` among its replicas: a single Lease
//! (coordination.k8s.io/v1) naming the process that holds it.
//!
//! Safety rests on the same argument as the agent's node leases
//! (docs/election.md): the holder writes only until `renew_deadline` after
//! sending its last successful renewal; a standby takes the Lease only
//! after seeing it unchanged for longer than `lease_duration`, measured on
//! its own clock, and only at the version it saw, so a renewal meanwhile
//! makes the takeover fail. With lease duration > renew deadline the old
//! holder has stopped writing before the new one starts.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::time::{Instant, sleep, timeout};
use tracing::{info, warn};

use crate::election::Timings;

pub const CONTROLLER_LEASE: &str = "speaker-controller";

/// Until when the holder may write; shared with everything that writes.
#[derive(Clone, Default)]
pub struct Authority(Arc<Mutex<Option<Instant>>>);

impl Authority {
    /// Whether a write sent now is still covered by the Lease.
    pub fn holds(&self) -> bool {
        self.0
            .lock()
            .ok()
            .and_then(|until| *until)
            .is_some_and(|until| Instant::now() < until)
    }

    fn set(&self, until: Option<Instant>) {
        if let Ok(mut u) = self.0.lock() {
            *u = until;
        }
    }

    fn until(&self) -> Option<Instant> {
        self.0.lock().ok().and_then(|u| *u)
    }
}

pub struct Leader {
    api: Api<Lease>,
    identity: String,
    timings: Timings,
    pub authority: Authority,
    /// The Lease as this process last wrote it.
    own: Mutex<Option<Lease>>,
}

impl Leader {
    pub fn new(client: Client, namespace: &str, identity: &str, timings: Timings) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
            timings,
            authority: Authority::default(),
            own: Mutex::default(),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this process holds the Lease; API errors are retried.
    pub async fn acquire(&self) {
        // The version last seen held by another, and since when (our clock).
        let mut seen: Option<(Option<String>, Instant)> = None;
        loop {
            match self.try_acquire(&mut seen).await {
                Ok(Some(lease)) => return self.keep(Some(lease)),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "cannot read or take the controller Lease; retrying"),
            }
            sleep(self.timings.renew_interval).await;
        }
    }

    async fn try_acquire(
        &self,
        seen: &mut Option<(Option<String>, Instant)>,
    ) -> kube::Result<Option<Lease>> {
        let sent = Instant::now();
        let lease = match self.request(self.api.get_opt(CONTROLLER_LEASE)).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(CONTROLLER_LEASE.into()),
                        ..Default::default()
                    },
                    spec: None,
                };
                let sent = Instant::now();
                let created = self
                    .request(
                        self.api
                            .create(&PostParams::default(), &self.stamped(lease)),
                    )
                    .await;
                return self.taken(created, sent, seen);
            }
            Some(lease) => lease,
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if !holder.is_empty() && holder != self.identity {
            let rv = lease.metadata.resource_version.clone();
            match seen {
                Some((v, since)) if *v == rv => {
                    // The holder's own duration if longer than ours.
                    let announced = spec
                        .lease_duration_seconds
                        .map_or(Duration::ZERO, |s| Duration::from_secs(s.max(0) as u64));
                    let wait = self.timings.lease_duration.max(announced);
                    if since.elapsed() <= wait {
                        return Ok(None);
                    }
                    info!(holder = %holder, "the active controller stopped renewing; taking over");
                }
                _ => {
                    *seen = Some((rv, sent));
                    return Ok(None);
                }
            }
        }
        let (sent, written) = self.renew(lease).await;
        self.taken(written, sent, seen)
    }

    /// A create or replace at a version seen: ours on success; lost to
    /// another writer on 409 (start watching anew).
    fn taken(
        &self,
        written: kube::Result<Lease>,
        sent: Instant,
        seen: &mut Option<(Option<String>, Instant)>,
    ) -> kube::Result<Option<Lease>> {
        match written {
            Ok(lease) => {
                self.authority.set(Some(sent + self.timings.renew_deadline));
                Ok(Some(lease))
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                *seen = None;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Renews the Lease until this process can no longer be sure it holds
    /// it; then [`Authority::holds`] is false and this returns why.
    pub async fn hold(&self) -> String {
        loop {
            let Some(lease) = self.own.lock().ok().and_then(|l| l.clone()) else {
                self.authority.set(None);
                return "the controller Lease is not held".into();
            };
            let until = self.authority.until().unwrap_or_else(Instant::now);
            // Wake at the next renewal, or when authority runs out.
            let next = Instant::now() + self.timings.renew_interval;
            tokio::time::sleep_until(next.min(until)).await;
            if Instant::now() >= until {
                self.authority.set(None);
                return format!(
                    "no renewal of the controller Lease succeeded for {:?}",
                    self.timings.renew_deadline
                );
            }
            let (sent, written) = self.renew(lease).await;
            match written {
                Ok(l) => {
                    self.keep(Some(l));
                    self.authority.set(Some(sent + self.timings.renew_deadline));
                }
                // Our copy is stale (a renewal answered too late for us):
                // go on from the current one if it still names us.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    match self.request(self.api.get(CONTROLLER_LEASE)).await {
                        Ok(fresh) if holder(&fresh) == self.identity => self.keep(Some(fresh)),
                        Ok(fresh) => {
                            self.authority.set(None);
                            return format!("the controller Lease was taken by {}", holder(&fresh));
                        }
                        Err(e) => warn!(error = %e, "cannot read the controller Lease"),
                    }
                }
                Err(e) => warn!(error = %e, "cannot renew the controller Lease"),
            }
        }
    }

    /// Gives the Lease up (a clean stop), so a standby takes over at once.
    /// Call only once nothing writes any more.
    pub async fn release(&self) {
        self.authority.set(None);
        let Some(mut lease) = self.own.lock().ok().and_then(|mut l| l.take()) else {
            return;
        };
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = Some(String::new());
        }
        match self
            .request(
                self.api
                    .replace(CONTROLLER_LEASE, &PostParams::default(), &lease),
            )
            .await
        {
            Ok(_) => info!("controller Lease released"),
            Err(e) => {
                warn!(error = %e, "cannot release the controller Lease; a standby takes over when it expires")
            }
        }
    }

    fn keep(&self, lease: Option<Lease>) {
        if let Ok(mut own) = self.own.lock() {
            *own = lease;
        }
    }

    async fn request<T>(&self, fut: impl Future<Output = kube::Result<T>>) -> kube::Result<T> {
        timeout(self.timings.request_timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(kube::Error::Service(
                    "the API server did not answer in time".into(),
                ))
            })
    }

    /// Replaces the Lease with `lease` stamped as ours, at its version;
    /// returns when the request was sent, and how it ended.
    async fn renew(&self, lease: Lease) -> (Instant, kube::Result<Lease>) {
        let sent = Instant::now();
        let params = PostParams::default();
        let written = self
            .request(
                self.api
                    .replace(CONTROLLER_LEASE, &params, &self.stamped(lease)),
            )
            .await;
        (sent, written)
    }

    /// `lease` renewed by this process (a new term when it was another's).
    fn stamped(&self, mut lease: Lease) -> Lease {
        let old = lease.spec.take().unwrap_or_default();
        let ours = old.holder_identity.as_deref() == Some(self.identity.as_str());
        let now = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                self.timings.lease_duration.as_secs_f64().ceil().max(1.0) as i32
            ),
            acquire_time: if ours {
                old.acquire_time.clone()
            } else {
                now.clone()
            },
            renew_time: now,
            lease_transitions: Some(
                old.lease_transitions.unwrap_or(0)
                    + i32::from(!ours && old.holder_identity.is_some()),
            ),
            ..old
        });
        lease
    }
}

fn holder(lease: &Lease) -> &str {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default()
}
