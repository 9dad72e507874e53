//! Answering for VIPs, the same for every mode: this is where a VIP enters
//! the data plane's map, where its solicited-node group is joined, and where
//! its announcements are sent. The modes decide *what* to answer for and
//! until when; the [`Answerer`] does it.
//!
//! It owns the loaded program, one packet socket per interface it is
//! attached to, the multicast memberships per VIP and link, and the
//! announcement bursts. Every entry it writes carries an expiry (the
//! dead-man's switch), and it remembers that expiry, so announcing a VIP
//! whose entry has lapsed is never done: a gratuitous ARP from a node that
//! no longer answers would pull clients to a silent MAC.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Instant,
};

use anyhow::{Context as _, Result};
use speaker_common::{
    maps::{Conflict, Counters, VipEntry, VipKey},
    wire::ipv6::solicited_node,
};
use tracing::{debug, info, info_span, warn};

use crate::{
    announce::{self, Announcer, BurstSettings, PacketSocket},
    dataplane::{AttachMode, Dataplane, DataplaneError, MapDiff, error_chain, now_ns},
    election::Mono,
    netdev::{Interface, Link, Membership, fmt_mac},
};

/// A VIP being answered: where, until when, and the groups joined for it.
struct Answered {
    links: Vec<Link>,
    expires: Mono,
    _groups: Vec<Membership>,
}

/// Another host claimed one of our VIPs (seen by the data plane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictSeen {
    pub vip: IpAddr,
    pub link: Link,
    pub other_mac: [u8; 6],
    /// Frames since the last report.
    pub frames: u64,
}

pub struct Answerer {
    dp: Dataplane,
    mode: AttachMode,
    /// Interfaces with the program attached, each with its socket.
    sockets: HashMap<u32, PacketSocket>,
    vips: BTreeMap<IpAddr, Answered>,
    announcer: Announcer<(IpAddr, Link)>,
    /// Conflict counts already reported, per map key.
    conflicts_seen: HashMap<VipKey, u64>,
    /// When each VIP was last defended.
    defended: HashMap<IpAddr, Instant>,
    /// Announcement rounds sent per VIP (each link's counts).
    announced: BTreeMap<IpAddr, u64>,
}

/// What was asked of and sent for one answered VIP, all its links added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VipFigures {
    /// ARP requests / Neighbor Solicitations for it (from the data plane).
    pub requests: u64,
    /// Of those, answered (from the data plane).
    pub replies: u64,
    /// Gratuitous ARP / unsolicited NA rounds sent.
    pub announcements: u64,
}

/// At most one defence of a VIP per this: a host claiming it again and
/// again must not turn this node into a flood.
pub const DEFEND_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The map entry for a VIP on `link`, expiring at `expires`: the one place
/// an entry is made.
fn entry(link: &Link, expires: Mono) -> VipEntry {
    VipEntry {
        mac: link.iface.mac,
        _pad: [0; 2],
        expires_ns: expires,
    }
}

impl Answerer {
    pub fn new(dp: Dataplane, mode: AttachMode, burst: BurstSettings) -> Self {
        Self {
            dp,
            mode,
            sockets: HashMap::new(),
            vips: BTreeMap::new(),
            announcer: Announcer::new(burst),
            conflicts_seen: HashMap::new(),
            defended: HashMap::new(),
            announced: BTreeMap::new(),
        }
    }

    /// The answerer over a data plane adopted from a predecessor (see
    /// [`Dataplane::open`]): each entry still live on one of this host's
    /// interfaces, with its MAC, is answered on as it is, without
    /// announcing (the LAN has it already); the others are removed.
    /// Returns the VIPs adopted, each with its earliest expiry.
    pub fn adopt(
        dp: Dataplane,
        mode: AttachMode,
        burst: BurstSettings,
        entries: Vec<(VipKey, VipEntry)>,
    ) -> (Self, Vec<(IpAddr, Mono)>) {
        let mut me = Self::new(dp, mode, burst);
        let now = now_ns();
        let mut found: BTreeMap<IpAddr, (Vec<Link>, Mono)> = BTreeMap::new();
        for (key, e) in entries {
            let vip = key.ip();
            let link = Interface::by_index(key.ifindex).ok().map(|iface| Link {
                iface,
                vlan_id: key.vlan_id,
            });
            match link {
                Some(link) if e.is_live(now) && e.mac == link.iface.mac => {
                    let (links, expires) = found.entry(vip).or_insert((Vec::new(), Mono::MAX));
                    links.push(link);
                    *expires = (*expires).min(e.expires_ns);
                }
                _ => {
                    if let Err(err) = me.dp.remove_vip(&key) {
                        warn!(%vip, error = %error_chain(&err), "cannot remove a stale entry");
                    }
                }
            }
        }
        let mut adopted = Vec::new();
        for (vip, (links, expires)) in found {
            let _span = info_span!("vip", %vip).entered();
            let mut groups = Vec::new();
            for link in &links {
                if let Err(e) = me.attach(&link.iface) {
                    warn!(%link, error = %format!("{e:#}"), "cannot attach");
                }
                if let IpAddr::V6(v6) = vip {
                    let group = solicited_node(&v6.octets()).into();
                    match Membership::join(link.iface.ifindex, group) {
                        Ok(m) => groups.push(m),
                        Err(e) => warn!(%link, error = %e, "cannot join the solicited-node group"),
                    }
                }
            }
            info!(links = ?links.iter().map(ToString::to_string).collect::<Vec<_>>(), "answering (adopted)");
            me.vips.insert(
                vip,
                Answered {
                    links,
                    expires,
                    _groups: groups,
                },
            );
            adopted.push((vip, expires));
        }
        // Conflicts counted before the restart were reported then.
        if let Ok(seen) = me.dp.maps().conflicts() {
            me.conflicts_seen = seen.into_iter().map(|(k, c)| (k, c.count)).collect();
        }
        (me, adopted)
    }

    /// Attaches the program to `iface` and opens its packet socket, once
    /// (several VLANs of one interface share them).
    pub fn attach(&mut self, iface: &Interface) -> Result<()> {
        if self.sockets.contains_key(&iface.ifindex) {
            return Ok(());
        }
        self.dp.attach(iface, self.mode)?;
        let socket = PacketSocket::open(iface.ifindex)
            .with_context(|| format!("cannot open a packet socket on {}", iface.name))?;
        self.sockets.insert(iface.ifindex, socket);
        Ok(())
    }

    /// The links `vip` is answered on, if it is.
    pub fn links(&self, vip: IpAddr) -> Option<&[Link]> {
        self.vips.get(&vip).map(|a| a.links.as_slice())
    }

    /// The VIPs answered for, with their entries' expiry.
    pub fn answered(&self) -> impl Iterator<Item = (IpAddr, Mono)> + '_ {
        self.vips.iter().map(|(vip, a)| (*vip, a.expires))
    }

    /// Starts answering for `vip` on `links` until `expires` and starts its
    /// announcement burst. Links that fail are skipped and the first error
    /// is returned; the VIP is answered on the others.
    pub fn install(&mut self, vip: IpAddr, links: &[Link], expires: Mono) -> Result<()> {
        let _span = info_span!("vip", %vip).entered();
        self.remove(vip);
        anyhow::ensure!(!links.is_empty(), "no link to answer for {vip} on");
        let (mut done, mut groups, mut first_error) = (Vec::new(), Vec::new(), None);
        for link in links {
            match self.install_on(vip, link, expires) {
                Ok(group) => {
                    groups.extend(group);
                    done.push(link.clone());
                }
                Err(e) => {
                    warn!(%link, error = %format!("{e:#}"), "cannot answer on this link");
                    first_error.get_or_insert(e);
                }
            }
        }
        info!(links = ?done.iter().map(ToString::to_string).collect::<Vec<_>>(), "answering");
        self.vips.insert(
            vip,
            Answered {
                links: done,
                expires,
                _groups: groups,
            },
        );
        self.announce(vip);
        first_error.map_or(Ok(()), Err)
    }

    fn install_on(
        &mut self,
        vip: IpAddr,
        link: &Link,
        expires: Mono,
    ) -> Result<Option<Membership>> {
        self.attach(&link.iface)?;
        self.dp
            .set_vip(&link.key(vip), &entry(link, expires))
            .with_context(|| format!("cannot install VIP {vip} on {link}"))?;
        let IpAddr::V6(v6) = vip else {
            return Ok(None);
        };
        let group = solicited_node(&v6.octets()).into();
        let m = Membership::join(link.iface.ifindex, group)
            .with_context(|| format!("cannot join {group} on {link} for {v6}"))?;
        Ok(Some(m))
    }

    /// Pushes the expiry of an answered VIP to `expires`. An entry that had
    /// lapsed (this process was stopped or stalled) is announced again.
    pub fn refresh(&mut self, vip: IpAddr, expires: Mono) -> Result<()> {
        self.refresh_all(&[(vip, expires)])
    }

    /// [`Self::refresh`] for many VIPs, in one write to the map.
    pub fn refresh_all(&mut self, vips: &[(IpAddr, Mono)]) -> Result<()> {
        let now = now_ns();
        let mut entries = Vec::new();
        let mut lapsed = Vec::new();
        for (vip, expires) in vips {
            let Some(a) = self.vips.get_mut(vip) else {
                continue;
            };
            if a.expires != VipEntry::NEVER && a.expires <= now {
                warn!(%vip, late_ms = (now - a.expires) / 1_000_000,
                    "entry had expired (the agent was not refreshing); answering again");
                lapsed.push(*vip);
            }
            a.expires = *expires;
            entries.extend(a.links.iter().map(|l| (l.key(*vip), entry(l, *expires))));
        }
        self.dp
            .set_vips(&entries)
            .with_context(|| format!("cannot refresh {} VIPs", vips.len()))?;
        for vip in lapsed {
            self.announce(vip);
        }
        Ok(())
    }

    /// Stops answering for `vip`: entries removed, groups left, burst ended.
    pub fn remove(&mut self, vip: IpAddr) {
        let Some(a) = self.vips.remove(&vip) else {
            return;
        };
        self.defended.remove(&vip);
        self.announced.remove(&vip);
        for link in &a.links {
            if let Err(e) = self.dp.remove_vip(&link.key(vip)) {
                warn!(%vip, %link, error = %error_chain(&e), "cannot remove VIP");
            }
            self.announcer.stop(&(vip, link.clone()));
        }
    }

    /// (Re)starts the announcement burst of `vip` on each of its links.
    pub fn announce(&mut self, vip: IpAddr) {
        let Some(a) = self.vips.get(&vip) else {
            return;
        };
        for link in &a.links {
            self.announcer.start((vip, link.clone()), Instant::now());
        }
    }

    /// Defends `vip` against another host's claim (RFC 5227 2.4 (b)): one
    /// announcement round on each of its links now, unless it was defended
    /// within [`DEFEND_INTERVAL`]. True when it defended.
    pub fn defend(&mut self, vip: IpAddr, now: Instant) -> bool {
        let Some(a) = self.vips.get(&vip) else {
            return false;
        };
        if self
            .defended
            .get(&vip)
            .is_some_and(|at| now.duration_since(*at) < DEFEND_INTERVAL)
        {
            return false;
        }
        self.defended.insert(vip, now);
        for link in &a.links {
            self.announcer.once((vip, link.clone()), now);
        }
        true
    }

    /// Sends the announcements due at `now`. Each is checked at send time:
    /// a VIP no longer answered, or whose entry has lapsed, is not announced.
    pub fn send_due(&mut self, now: Instant) {
        let mono = now_ns();
        for (vip, link) in self.announcer.due(now) {
            let live = self
                .vips
                .get(&vip)
                .is_some_and(|a| a.expires == VipEntry::NEVER || mono < a.expires);
            let _span = info_span!("vip", %vip, %link).entered();
            let Some(socket) = self.sockets.get(&link.iface.ifindex).filter(|_| live) else {
                debug!("not announced: no longer answered");
                continue;
            };
            match announce::send(socket, &link, vip) {
                Ok(()) => {
                    debug!("announced");
                    *self.announced.entry(vip).or_default() += 1;
                }
                Err(e) => warn!(error = %e, "cannot send announcement"),
            }
        }
    }

    /// When the next announcement is due, if any.
    pub fn next_announcement(&self) -> Option<Instant> {
        self.announcer.next_deadline()
    }

    /// Makes the map hold exactly `wanted` (VIP, expiry) on the links each
    /// is answered on, and forgets answered VIPs that are not wanted.
    /// Returns how many map entries differed.
    pub fn repair(
        &mut self,
        wanted: impl IntoIterator<Item = (IpAddr, Mono)>,
    ) -> Result<usize, DataplaneError> {
        let wanted: BTreeMap<IpAddr, Mono> = wanted.into_iter().collect();
        let stale: Vec<IpAddr> = self
            .vips
            .keys()
            .filter(|v| !wanted.contains_key(v))
            .copied()
            .collect();
        for vip in stale {
            warn!(%vip, "answered without being owned; removing");
            self.remove(vip);
        }
        let mut want = BTreeMap::new();
        for (vip, expires) in wanted {
            let Some(a) = self.vips.get_mut(&vip) else {
                continue;
            };
            a.expires = expires;
            for link in &a.links {
                want.insert(link.key(vip), entry(link, expires));
            }
        }
        let diff = MapDiff::between(&want, self.dp.maps().vips()?);
        self.dp.apply(&diff)?;
        Ok(diff.len())
    }

    /// Claims on our VIPs by other hosts since the last call.
    pub fn new_conflicts(&mut self) -> Result<Vec<ConflictSeen>, DataplaneError> {
        let mut out = Vec::new();
        for (key, c) in self.dp.maps().conflicts()? {
            let before = self.conflicts_seen.insert(key, c.count).unwrap_or(0);
            if c.count <= before {
                continue;
            }
            if let Some(seen) = self.conflict_on(&key, &c, c.count - before) {
                warn!(vip = %seen.vip, link = %seen.link, other_mac = %fmt_mac(&seen.other_mac),
                    frames = seen.frames, "another host claims this VIP");
                out.push(seen);
            }
        }
        Ok(out)
    }

    fn conflict_on(&self, key: &VipKey, c: &Conflict, frames: u64) -> Option<ConflictSeen> {
        self.vips.iter().find_map(|(vip, a)| {
            let link = a.links.iter().find(|l| l.key(*vip) == *key)?;
            Some(ConflictSeen {
                vip: *vip,
                link: link.clone(),
                other_mac: c.last_mac,
                frames,
            })
        })
    }

    /// Per answered VIP: requests and replies as the data plane counted
    /// them, and the announcements sent.
    pub fn figures(&self) -> Result<BTreeMap<IpAddr, VipFigures>, DataplaneError> {
        let stats: HashMap<VipKey, _> = self.dp.maps().vip_stats()?.into_iter().collect();
        let mut out = BTreeMap::new();
        for (vip, a) in &self.vips {
            let f: &mut VipFigures = out.entry(*vip).or_default();
            f.announcements = self.announced.get(vip).copied().unwrap_or(0);
            for link in &a.links {
                if let Some(s) = stats.get(&link.key(*vip)) {
                    f.requests += s.requests;
                    f.replies += s.replies;
                }
            }
        }
        Ok(out)
    }

    /// The data plane's verdict counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        self.dp.maps().counters()
    }

    /// Whether a stop for a restart would leave every VIP answered.
    pub fn keepable(&self) -> bool {
        self.dp.keepable()
    }

    /// Stops this process's part for a restart: the entries, the program
    /// and the pins stay, for the successor `instance`-named `VERSION` lets
    /// adopt; the kernel answers until the entries expire.
    pub fn keep(self, instance: &str) -> Result<(), DataplaneError> {
        self.dp.keep(instance)
    }

    /// Stops answering for everything, leaves the groups, detaches and
    /// unpins: nothing of this process stays in the kernel.
    pub fn shutdown(mut self) {
        let vips: Vec<IpAddr> = self.vips.keys().copied().collect();
        for vip in vips {
            self.remove(vip);
        }
        self.dp.detach_all();
        self.dp.unpin();
    }
}
