//! `speaker static`: answer for a fixed list of VIPs on fixed links, without
//! Kubernetes or election (keepalived-style hosts, and the demo).
//!
//! Each VIP is installed with a finite expiry refreshed every
//! `refresh_interval`; if this process stops (hang, SIGSTOP, crash), the
//! data plane stops answering on its own after `hold_time`.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Instant,
};

use anyhow::{Context as _, Result};
use speaker_common::{
    maps::{VipEntry, VipKey},
    wire::ipv6::solicited_node,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, info, info_span, warn};

use crate::{
    announce::{Announcer, PacketSocket},
    config::StaticConfig,
    dataplane::{Dataplane, error_chain, monotonic_now_ns},
    netdev::{Link, Membership, fmt_mac},
};

/// One VIP on one link.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    key: VipKey,
    vip: IpAddr,
    link: usize,
}

impl Target {
    fn new(vip: IpAddr, link: &Link, index: usize) -> Self {
        Self {
            key: link.key(vip),
            vip,
            link: index,
        }
    }
}

pub async fn run(cfg: StaticConfig) -> Result<()> {
    // Installed first, so a signal during start-up still ends in a clean stop.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

    let mut dp = Dataplane::load(&cfg.bpffs)?;
    info!(bpffs = %cfg.bpffs.display(), "maps pinned");
    let mut sockets = HashMap::new();
    for link in &cfg.links {
        let iface = &link.iface;
        if sockets.contains_key(&iface.ifindex) {
            continue; // several VLANs of one interface share its program
        }
        dp.attach(iface, cfg.xdp_mode)?;
        let s = PacketSocket::open(iface.ifindex)
            .with_context(|| format!("cannot open a packet socket on {}", iface.name))?;
        sockets.insert(iface.ifindex, s);
    }
    let targets: Vec<Target> = cfg
        .vips
        .iter()
        .flat_map(|v| {
            v.links
                .iter()
                .map(|&i| Target::new(v.addr, &cfg.links[i], i))
        })
        .collect();

    let mut announcer = Announcer::new(cfg.burst);
    let mut memberships: BTreeMap<Target, Membership> = BTreeMap::new();
    let mut conflicts_seen: BTreeMap<VipKey, u64> = BTreeMap::new();
    let mut next_refresh = Instant::now();
    let result = loop {
        let now = Instant::now();
        if now >= next_refresh {
            if let Err(e) = refresh(
                &mut dp,
                &cfg,
                &targets,
                &mut announcer,
                &mut memberships,
                now,
            ) {
                break Err(e);
            }
            report_conflicts(&dp, &targets, &cfg.links, &mut conflicts_seen);
            next_refresh = now + cfg.refresh_interval;
        }
        for t in announcer.due(now) {
            let link = &cfg.links[t.link];
            announce(link, &sockets[&link.iface.ifindex], &t);
        }
        let wake = announcer
            .next_deadline()
            .map_or(next_refresh, |d| d.min(next_refresh));
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break Ok(()) }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break Ok(()) }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    };

    // Stop answering first, then leave the groups, detach and unpin (also
    // after an error).
    for t in &targets {
        if let Err(e) = dp.remove_vip(&t.key) {
            warn!(vip = %t.vip, error = %error_chain(&e), "cannot remove VIP from the map");
        }
    }
    memberships.clear();
    dp.detach_all();
    dp.unpin();
    info!("stopped: VIPs removed, XDP detached, pins removed");
    result
}

/// Extends every entry's expiry to now + hold time. An entry found expired
/// or missing has lapsed (we were not running, or it is new): it is
/// announced again.
fn refresh(
    dp: &mut Dataplane,
    cfg: &StaticConfig,
    targets: &[Target],
    announcer: &mut Announcer<Target>,
    memberships: &mut BTreeMap<Target, Membership>,
    now: Instant,
) -> Result<()> {
    let mono = monotonic_now_ns();
    let expires_ns = mono + cfg.hold_time.as_nanos() as u64;
    for t in targets {
        let link = &cfg.links[t.link];
        let _span = info_span!("vip", vip = %t.vip, link = %link).entered();
        let lapsed = match dp.vip(&t.key)? {
            None => {
                info!("announcing");
                true
            }
            Some(e) if !e.is_live(mono) => {
                warn!(
                    late_ms = (mono - e.expires_ns) / 1_000_000,
                    "entry had expired (agent was not refreshing); answering again"
                );
                true
            }
            Some(_) => false,
        };
        if let IpAddr::V6(v6) = t.vip
            && !memberships.contains_key(t)
        {
            let group = solicited_node(&v6.octets()).into();
            let m = Membership::join(link.iface.ifindex, group)
                .with_context(|| format!("cannot join {group} on {} for {v6}", link.iface.name))?;
            memberships.insert(t.clone(), m);
        }
        dp.set_vip(
            &t.key,
            &VipEntry {
                mac: link.iface.mac,
                _pad: [0; 2],
                expires_ns,
            },
        )
        .with_context(|| format!("cannot install VIP {} on {link}", t.vip))?;
        if lapsed {
            announcer.start(t.clone(), now);
        }
    }
    Ok(())
}

fn announce(link: &Link, socket: &PacketSocket, t: &Target) {
    let _span = info_span!("vip", vip = %t.vip, link = %link).entered();
    match crate::announce::send(socket, link, t.vip) {
        Ok(()) => debug!("announced"),
        Err(e) => warn!(error = %e, "cannot send announcement"),
    }
}

fn report_conflicts(
    dp: &Dataplane,
    targets: &[Target],
    links: &[Link],
    seen: &mut BTreeMap<VipKey, u64>,
) {
    let conflicts = match dp.conflicts() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %error_chain(&e), "cannot read conflicts");
            return;
        }
    };
    for (key, c) in conflicts {
        let before = seen.insert(key, c.count).unwrap_or(0);
        if c.count > before
            && let Some(t) = targets.iter().find(|t| t.key == key)
        {
            warn!(
                vip = %t.vip,
                link = %links[t.link],
                other_mac = %fmt_mac(&c.last_mac),
                frames = c.count - before,
                "another host claims this VIP"
            );
        }
    }
}
