//! `speaker static`: answer for a fixed list of VIPs on fixed interfaces,
//! without Kubernetes or election (keepalived-style hosts, and the demo).
//!
//! Each VIP is installed with a finite expiry refreshed every
//! `refresh_interval`; if this process stops (hang, SIGSTOP, crash), the
//! data plane stops answering on its own after `hold_time`.

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    time::Instant,
};

use anyhow::{Context as _, Result};
use speaker_common::maps::{VipEntry, VipKey};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, info, info_span, warn};

use crate::{
    announce::{Announcer, PacketSocket, garp_reply, garp_request},
    config::StaticConfig,
    dataplane::{Dataplane, error_chain, monotonic_now_ns},
    netdev::{Interface, fmt_mac},
};

/// One VIP on one interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    key: VipKey,
    vip: Ipv4Addr,
    iface: usize,
}

pub async fn run(cfg: StaticConfig) -> Result<()> {
    // Installed first, so a signal during start-up still ends in a clean stop.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

    let mut dp = Dataplane::load(&cfg.bpffs)?;
    info!(bpffs = %cfg.bpffs.display(), "maps pinned");
    for iface in &cfg.interfaces {
        dp.attach(iface, cfg.xdp_mode)?;
    }

    let mut sockets = HashMap::new();
    for iface in &cfg.interfaces {
        let s = PacketSocket::open(iface.ifindex)
            .with_context(|| format!("cannot open a packet socket on {}", iface.name))?;
        sockets.insert(iface.ifindex, s);
    }
    let targets: Vec<Target> = cfg
        .interfaces
        .iter()
        .enumerate()
        .flat_map(|(i, iface)| {
            cfg.vips.iter().map(move |vip| Target {
                key: VipKey::ipv4(iface.ifindex, 0, vip.octets()),
                vip: *vip,
                iface: i,
            })
        })
        .collect();

    let mut announcer = Announcer::new(cfg.burst);
    let mut conflicts_seen: BTreeMap<VipKey, u64> = BTreeMap::new();
    let mut next_refresh = Instant::now();
    let result = loop {
        let now = Instant::now();
        if now >= next_refresh {
            if let Err(e) = refresh(&mut dp, &cfg, &targets, &mut announcer, now) {
                break Err(e);
            }
            report_conflicts(&dp, &targets, &cfg.interfaces, &mut conflicts_seen);
            next_refresh = now + cfg.refresh_interval;
        }
        for t in announcer.due(now) {
            announce(
                &cfg.interfaces[t.iface],
                &sockets[&cfg.interfaces[t.iface].ifindex],
                &t,
            );
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

    // Stop answering first, then detach and unpin (also after an error).
    for t in &targets {
        if let Err(e) = dp.remove_vip(&t.key) {
            warn!(vip = %t.vip, error = %error_chain(&e), "cannot remove VIP from the map");
        }
    }
    dp.detach_all();
    dp.unpin();
    info!("stopped: VIPs removed, XDP detached, pins removed");
    result
}

/// Extends every entry's expiry to now + hold time. An entry found expired
/// or missing has lapsed (we were not running); it is re-announced.
fn refresh(
    dp: &mut Dataplane,
    cfg: &StaticConfig,
    targets: &[Target],
    announcer: &mut Announcer<Target>,
    now: Instant,
) -> Result<()> {
    let mono = monotonic_now_ns();
    let expires_ns = mono + cfg.hold_time.as_nanos() as u64;
    for t in targets {
        let iface = &cfg.interfaces[t.iface];
        let _span = info_span!("vip", vip = %t.vip, interface = %iface.name).entered();
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
        dp.set_vip(
            &t.key,
            &VipEntry {
                mac: iface.mac,
                _pad: [0; 2],
                expires_ns,
            },
        )
        .with_context(|| format!("cannot install VIP {} on {}", t.vip, iface.name))?;
        if lapsed {
            announcer.start(t.clone(), now);
        }
    }
    Ok(())
}

fn announce(iface: &Interface, socket: &PacketSocket, t: &Target) {
    let _span = info_span!("vip", vip = %t.vip, interface = %iface.name).entered();
    for frame in [garp_request(iface.mac, t.vip), garp_reply(iface.mac, t.vip)] {
        if let Err(e) = socket.send(&frame) {
            warn!(error = %e, "cannot send gratuitous ARP");
        }
    }
    debug!("gratuitous ARP sent");
}

fn report_conflicts(
    dp: &Dataplane,
    targets: &[Target],
    interfaces: &[Interface],
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
                interface = %interfaces[t.iface].name,
                other_mac = %fmt_mac(&c.last_mac),
                frames = c.count - before,
                "another host claims this VIP"
            );
        }
    }
}
