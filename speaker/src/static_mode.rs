//! `speaker static`: answer for a fixed list of VIPs on fixed links, without
//! Kubernetes or election (keepalived-style hosts, and the demo).
//!
//! Each VIP is installed with a finite expiry refreshed every
//! `refresh_interval`; if this process stops (hang, SIGSTOP, crash), the
//! data plane stops answering on its own after `hold_time`.

use std::time::Instant;

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    answer::Answerer,
    config::StaticConfig,
    dataplane::{Dataplane, now_ns},
    netdev::Link,
};

pub async fn run(cfg: StaticConfig) -> Result<()> {
    // Installed first, so a signal during start-up still ends in a clean stop.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

    let dp = Dataplane::load(&cfg.bpffs)?;
    info!(bpffs = %cfg.bpffs.display(), "maps pinned");
    let mut answer = Answerer::new(dp, cfg.xdp_mode, cfg.burst);
    let result = serve(&cfg, &mut answer, &mut sigterm, &mut sigint).await;
    // Stop answering first, then leave the groups, detach and unpin (also
    // after an error).
    answer.shutdown();
    info!("stopped: VIPs removed, XDP detached, pins removed");
    result
}

async fn serve(
    cfg: &StaticConfig,
    answer: &mut Answerer,
    sigterm: &mut tokio::signal::unix::Signal,
    sigint: &mut tokio::signal::unix::Signal,
) -> Result<()> {
    for link in &cfg.links {
        answer.attach(&link.iface)?;
    }
    let expiry = || now_ns() + cfg.hold_time.as_nanos() as u64;
    for vip in &cfg.vips {
        let links: Vec<Link> = vip.links.iter().map(|&i| cfg.links[i].clone()).collect();
        answer.install(vip.addr, &links, expiry())?;
    }
    let mut next_refresh = Instant::now() + cfg.refresh_interval;
    loop {
        let now = Instant::now();
        if now >= next_refresh {
            let expires = expiry();
            for vip in &cfg.vips {
                answer.refresh(vip.addr, expires)?;
            }
            match answer.new_conflicts() {
                Ok(seen) => {
                    for c in seen {
                        answer.defend(c.vip, now);
                    }
                }
                Err(e) => warn!(error = %format!("{e:#}"), "cannot read conflicts"),
            }
            next_refresh = now + cfg.refresh_interval;
        }
        answer.send_due(now);
        let wake = answer
            .next_announcement()
            .map_or(next_refresh, |d| d.min(next_refresh));
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); return Ok(()) }
            _ = sigint.recv() => { info!("SIGINT: stopping"); return Ok(()) }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}
