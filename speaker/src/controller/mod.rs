//! `speaker controller`: gives LoadBalancer Services their addresses from
//! the IPAddressPools, with MetalLB's rules (`allocation`), and writes them
//! to `status.loadBalancer.ingress`, where the agents read them.
//!
//! Replicas stand by until one holds the controller Lease (`k8s::leader`).
//! The active one rebuilds its state from the Services' statuses, then
//! follows changes (`active`); it writes only while its Lease covers the
//! write. When it loses the Lease it drops everything and stands by again;
//! on SIGTERM it releases the Lease, so a standby takes over at once.

mod active;
mod inputs;
mod pool_status;
mod status;

use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    config::ControllerConfig,
    k8s::{self, events::Events, leader::Leader, preflight},
    metrics::{self, ControllerMetrics},
};
use active::Active;

pub async fn run(cfg: ControllerConfig) -> Result<()> {
    cfg.timings.validate().context("unsafe Lease timings")?;
    let client = k8s::client().await?;
    let needs = [
        (preflight::SERVICES, ""),
        (preflight::NAMESPACES, ""),
        (preflight::LEASES, cfg.namespace.as_str()),
        (preflight::IP_ADDRESS_POOLS, cfg.config_namespace.as_str()),
    ];
    preflight::check(&client, &needs).await?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let metrics = Arc::new(Mutex::new(ControllerMetrics::default()));
    metrics::serve(cfg.metrics_addr, metrics.clone()).await?;
    let identity = identity();
    let leader = Leader::new(client.clone(), &cfg.namespace, &identity, cfg.timings);
    let events = Events::new(client.clone(), "speaker-controller", &identity);
    info!(%identity, namespace = %cfg.namespace, config_namespace = %cfg.config_namespace,
        "controller started; waiting for the controller Lease");
    loop {
        tokio::select! {
            () = leader.acquire() => {}
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
        }
        info!("active: holding the controller Lease");
        metrics::update(&metrics, |m| m.active = true);
        let mut active = Active::start(
            &client,
            &cfg,
            leader.authority.clone(),
            events.clone(),
            metrics.clone(),
        );
        let stop = tokio::select! {
            why = leader.hold() => {
                warn!(%why, "no longer the active controller; standing by");
                false
            }
            result = active.run() => {
                result?;
                false
            }
            _ = sigterm.recv() => true,
            _ = sigint.recv() => true,
        };
        // Dropping it aborts the watches and every write not yet sent.
        drop(active);
        metrics::update(&metrics, |m| {
            m.active = false;
            m.synced = false;
        });
        if stop {
            leader.release().await;
            return Ok(());
        }
    }
}

/// This process among the replicas: the pod's name when the Deployment
/// gives it (`POD_NAME`), else the host's, with a random suffix so that a
/// restarted process is a new holder.
fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "controller".into());
    format!("{base}-{}", crate::k8s::instance_id())
}
