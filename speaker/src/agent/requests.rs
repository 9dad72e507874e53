//! The election's API requests, each carried out in a task of its own and
//! bounded by the request timeout; the result comes back to the agent's
//! loop as an ordinary election [`Event`]. An unreachable API server only
//! makes requests fail.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    sync::{Semaphore, mpsc, watch},
    time::timeout,
};
use tracing::{debug, warn};

use crate::{
    dataplane::now_ns,
    election::{Event, Mono, RenewOutcome, WriteOutcome},
    k8s::leases::{LeaseError, Leases},
    metrics::{self, Metrics},
};

/// Record writes in flight at most: a mass takeover must not crowd out the
/// node-lease renewals every answer depends on.
const MAX_RECORD_WRITES: usize = 16;

pub struct Requests {
    leases: Leases,
    events: mpsc::Sender<Event>,
    writes: Arc<Semaphore>,
    metrics: Arc<Mutex<Metrics>>,
    /// Past this a request counts as failed (it may still apply).
    timeout: Duration,
    /// Set when another agent has taken this node's lease.
    superseded: watch::Sender<Option<String>>,
}

impl Requests {
    pub fn new(
        leases: Leases,
        events: mpsc::Sender<Event>,
        metrics: Arc<Mutex<Metrics>>,
        timeout: Duration,
    ) -> Self {
        Self {
            leases,
            events,
            writes: Arc::new(Semaphore::new(MAX_RECORD_WRITES)),
            metrics,
            timeout,
            superseded: watch::channel(None).0,
        }
    }

    /// Tells when another agent took this node's lease: this process must
    /// stop acting as the node at once.
    pub fn superseded(&self) -> watch::Receiver<Option<String>> {
        self.superseded.subscribe()
    }

    /// Marks the node lease released on a clean stop.
    pub async fn release_node_lease(&self) {
        match timeout(self.timeout, self.leases.release_own()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot release the node lease"),
            Err(_) => warn!("releasing the node lease timed out"),
        }
    }

    /// Renews the node lease (renewal `req`, at version `base`, naming
    /// `witnesses`); answers [`Event::RenewDone`] with the send time.
    pub fn renew(
        &self,
        req: u64,
        base: Option<String>,
        witnesses: Vec<String>,
        restart_hold: Option<std::time::Duration>,
    ) {
        let sent_at: Mono = now_ns();
        let (leases, events, metrics, limit) = self.handles();
        let superseded = self.superseded.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome =
                match timeout(limit, leases.renew(base, req, &witnesses, restart_hold)).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(e @ LeaseError::Duplicate { .. })) => {
                        superseded.send_replace(Some(e.to_string()));
                        RenewOutcome::Failed
                    }
                    Ok(Err(e)) => {
                        debug!(error = %e, "lease renewal failed");
                        RenewOutcome::Failed
                    }
                    Err(_) => {
                        debug!("lease renewal timed out");
                        RenewOutcome::Failed
                    }
                };
            let took = started.elapsed();
            metrics::update(&metrics, |m| {
                match outcome {
                    RenewOutcome::Renewed { .. } => m.renewals_ok += 1,
                    _ => m.renewals_failed += 1,
                }
                m.renewal_seconds.observe(took.as_secs_f64());
            });
            let _ = events
                .send(Event::RenewDone {
                    req,
                    sent_at,
                    outcome,
                })
                .await;
        });
    }

    /// Reads `node`'s lease afresh; answers [`Event::NodeLeaseRead`].
    pub fn read_node(&self, req: u64, node: String) {
        let (leases, events, _, limit) = self.handles();
        tokio::spawn(async move {
            let (lease, ok) = match timeout(limit, leases.read_node(&node)).await {
                Ok(Ok(lease)) => (lease, true),
                _ => (None, false),
            };
            let (rv, witnesses, restart_hold) = match lease {
                Some((rv, w, r)) => (Some(rv), w, r),
                None => (None, Vec::new(), None),
            };
            let _ = events
                .send(Event::NodeLeaseRead {
                    req,
                    rv,
                    witnesses,
                    restart_hold,
                    ok,
                })
                .await;
        });
    }

    /// Reads a VIP's record afresh; answers [`Event::RecordRead`].
    pub fn read_record(&self, vip: std::net::IpAddr) {
        let (leases, events, _, limit) = self.handles();
        tokio::spawn(async move {
            let (record, ok) = match timeout(limit, leases.read_record(vip)).await {
                Ok(Ok(record)) => (record, true),
                _ => (None, false),
            };
            let _ = events.send(Event::RecordRead { vip, record, ok }).await;
        });
    }

    /// Writes a VIP's record; answers [`Event::WriteDone`].
    pub fn write_record(
        &self,
        req: u64,
        vip: std::net::IpAddr,
        expect: Option<String>,
        holder: Option<String>,
        term: u64,
    ) {
        let (leases, events, metrics, limit) = self.handles();
        let writes = self.writes.clone();
        tokio::spawn(async move {
            // The timeout runs from when the election asked, waiting for
            // a permit included: the election timed its claim from then,
            // and a write still queued after a timeout's worth of a mass
            // takeover fails unsent and is retried, instead of leaving
            // the VIP claiming for as long as the queue takes.
            let write = async {
                let _permit = writes.acquire().await;
                leases.write_record(vip, expect, holder, term).await
            };
            let outcome = timeout(limit, write).await.unwrap_or(WriteOutcome::Failed);
            metrics::update(&metrics, |m| match outcome {
                WriteOutcome::Written(_) => m.record_writes_ok += 1,
                WriteOutcome::Conflict => m.record_conflicts += 1,
                WriteOutcome::Failed => m.record_writes_failed += 1,
            });
            let _ = events.send(Event::WriteDone { req, outcome }).await;
        });
    }

    fn handles(&self) -> (Leases, mpsc::Sender<Event>, Arc<Mutex<Metrics>>, Duration) {
        (
            self.leases.clone(),
            self.events.clone(),
            self.metrics.clone(),
            self.timeout,
        )
    }
}
