//! What this node can do for each VIP: the plan says which nodes may
//! announce it and on which interfaces; this node's links and their carrier
//! say whether it can. The result goes to the election as eligibility,
//! only where it changed (each event makes the election look at every VIP,
//! which adds up with a thousand of them).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tracing::{info, warn};

use crate::{
    election::Event,
    eligibility::{Issue, Nodes, ObjectRef, Plan, VipPlan},
    netdev::{Interface, Link, fmt_mac},
};

pub struct Local {
    node: String,
    /// Where VIPs are announced when the plan names no interface.
    default_links: Vec<Link>,
    plan: Plan,
    /// Interfaces named by L2Advertisements, looked up once (`None`: unusable).
    links_by_name: HashMap<String, Option<Link>>,
    /// Carrier per interface index, as last polled.
    carriers: BTreeMap<u32, bool>,
    /// The eligibility last given to the election, per VIP.
    told: BTreeMap<IpAddr, (bool, Nodes)>,
    /// VIPs this node failed to answer for, and until when it does not
    /// contend for them again.
    failed: BTreeMap<IpAddr, Instant>,
    /// VIPs whose endpoints here fail the local probe (agent/probe.rs).
    unhealthy: BTreeSet<IpAddr>,
}

/// How long a node that failed to answer for a VIP leaves it to others.
pub const FAILED_BACKOFF: Duration = Duration::from_secs(10);

impl Local {
    pub fn new(node: &str, default_links: Vec<Link>) -> Self {
        Self {
            node: node.to_string(),
            default_links,
            plan: Plan::default(),
            links_by_name: HashMap::new(),
            carriers: BTreeMap::new(),
            told: BTreeMap::new(),
            failed: BTreeMap::new(),
            unhealthy: BTreeSet::new(),
        }
    }

    /// The VIPs this node's endpoints cannot serve, by the local probe.
    pub fn set_unhealthy(&mut self, vips: &BTreeSet<IpAddr>) {
        self.unhealthy.clone_from(vips);
    }

    /// This node could not answer for `vip` (attach or map write failed):
    /// it is not eligible until `until`, so the VIP goes to a node that can.
    pub fn failed(&mut self, vip: IpAddr, until: Instant) {
        self.failed.insert(vip, until);
    }

    /// Whether any VIP is held back after a failure (readiness).
    pub fn any_failed(&self) -> bool {
        !self.failed.is_empty()
    }

    /// Ends the backoffs that are over; true when one did.
    pub fn failures_expired(&mut self, now: Instant) -> bool {
        let before = self.failed.len();
        self.failed.retain(|_, until| *until > now);
        self.failed.len() != before
    }

    /// Takes the plan's changes in (`None`: a VIP no longer planned);
    /// true when what the local probe checks changed with them.
    pub fn update_plan(&mut self, changed: Vec<(IpAddr, Option<VipPlan>)>) -> bool {
        let mut probes = false;
        for (vip, new) in changed {
            let before = self
                .plan
                .vips
                .get(&vip)
                .and_then(|p| p.probes.get(&self.node));
            let after = new.as_ref().and_then(|p| p.probes.get(&self.node));
            probes |= before != after;
            match new {
                Some(p) => self.plan.vips.insert(vip, p),
                None => self.plan.vips.remove(&vip),
            };
        }
        probes
    }

    /// The issues of the plan, as last updated.
    pub fn set_issues(&mut self, issues: Vec<Issue>) {
        self.plan.issues = issues;
    }

    /// What the local endpoint probe checks here, per VIP.
    pub fn probe_targets(&self) -> BTreeMap<IpAddr, BTreeSet<SocketAddr>> {
        self.plan
            .vips
            .iter()
            .filter_map(|(vip, p)| Some((*vip, p.probes.get(&self.node)?.clone())))
            .collect()
    }

    /// Every VIP in the plan with the Services using it.
    pub fn planned(&self) -> impl Iterator<Item = (IpAddr, &[ObjectRef])> {
        self.plan
            .vips
            .iter()
            .map(|(vip, p)| (*vip, p.services.as_slice()))
    }

    /// The Services using `vip`, for Events.
    pub fn services(&self, vip: IpAddr) -> &[ObjectRef] {
        self.plan
            .vips
            .get(&vip)
            .map_or(&[], |p| p.services.as_slice())
    }

    /// The interfaces the plan names for `vip` on this node (none: the
    /// default links).
    pub fn interfaces(&self, vip: IpAddr) -> Vec<String> {
        self.plan
            .vips
            .get(&vip)
            .and_then(|p| p.nodes.get(&self.node))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The links this node announces `vip` on: the plan's interfaces, or
    /// the default ones.
    pub fn links(&mut self, vip: IpAddr) -> Vec<Link> {
        let names = self.interfaces(vip);
        if names.is_empty() {
            return self.default_links.clone();
        }
        names
            .into_iter()
            .filter_map(|n| {
                self.links_by_name
                    .entry(n.clone())
                    .or_insert_with(|| match Link::lookup(&n) {
                        Ok(l) => Some(l),
                        Err(e) => {
                            warn!(interface = %n, error = %e,
                                "L2Advertisement names an interface this node cannot use");
                            None
                        }
                    })
                    .clone()
            })
            .collect()
    }

    /// Eligibility of every VIP in the plan (or told before) for this
    /// node, for those whose eligibility changed since last time. An
    /// interface without carrier cannot answer: the VIP is handed over.
    pub fn eligibility(&mut self, extra: impl IntoIterator<Item = IpAddr>) -> Vec<Event> {
        let mut vips: BTreeSet<IpAddr> = self.plan.vips.keys().copied().collect();
        vips.extend(extra);
        vips.extend(self.told.keys().copied());
        self.eligibility_of(vips)
    }

    /// The same for `vips` only: those a plan change touched.
    pub fn eligibility_of(&mut self, vips: impl IntoIterator<Item = IpAddr>) -> Vec<Event> {
        let mut out = Vec::new();
        for vip in vips {
            let candidates = self
                .plan
                .vips
                .get(&vip)
                .map(|p| p.nodes.clone())
                .unwrap_or_default();
            let planned = candidates.contains_key(&self.node);
            let links = if planned { self.links(vip) } else { Vec::new() };
            let up = links
                .iter()
                .any(|l| *self.carriers.get(&l.iface.ifindex).unwrap_or(&true));
            let ok = !self.failed.contains_key(&vip) && !self.unhealthy.contains(&vip);
            let now = (planned && up && ok, candidates);
            if self.told.get(&vip) == Some(&now) {
                continue;
            }
            // Told once that it may not, a VIP gone from the plan is
            // forgotten.
            if !now.0 && now.1.is_empty() && !self.plan.vips.contains_key(&vip) {
                self.told.remove(&vip);
            } else {
                self.told.insert(vip, now.clone());
            }
            out.push(Event::Eligibility {
                vip,
                eligible: now.0,
                candidates: now.1,
            });
        }
        out
    }

    /// Polls every link in use: an interface re-created (new index) or
    /// given a new MAC is looked up afresh, and carrier changes are noted.
    pub fn poll_links(&mut self) -> LinkChange {
        let mut change = LinkChange::default();
        let mut in_use = BTreeSet::new();
        let links = self
            .default_links
            .iter_mut()
            .chain(self.links_by_name.values_mut().flatten());
        for link in links {
            if let Ok(now) = Interface::lookup(&link.iface.name)
                && (now.ifindex, now.mac) != (link.iface.ifindex, link.iface.mac)
            {
                info!(interface = %link.iface.name, ifindex = now.ifindex,
                    mac = %fmt_mac(&now.mac), "interface changed");
                link.iface = now;
                change.moved = true;
            }
            let up = link.iface.is_running().unwrap_or(false);
            in_use.insert(link.iface.ifindex);
            if self.carriers.insert(link.iface.ifindex, up) != Some(up) {
                info!(interface = %link.iface.name, up, "carrier");
                change.carrier = true;
            }
        }
        // Interfaces gone or re-created under a new index.
        self.carriers.retain(|i, _| in_use.contains(i));
        change
    }
}

/// What polling the links found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkChange {
    /// A carrier went up or down.
    pub carrier: bool,
    /// An interface has a new index or MAC: VIPs on it must be installed anew.
    pub moved: bool,
}

/// Whether two link lists answer alike: same interfaces, VLANs and MACs.
pub fn same_links(a: &[Link], b: &[Link]) -> bool {
    let key = |l: &Link| (l.iface.ifindex, l.vlan_id, l.iface.mac);
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_with(vip: IpAddr) -> Local {
        let link = Link {
            iface: Interface {
                name: "eth0".into(),
                ifindex: 2,
                mac: [2, 0, 0, 0, 0, 1],
            },
            vlan_id: 0,
        };
        let mut local = Local::new("front-0", vec![link]);
        let mut plan = Plan::default();
        let nodes = std::sync::Arc::new(BTreeMap::from([("front-0".to_string(), BTreeSet::new())]));
        plan.vips.insert(
            vip,
            VipPlan {
                nodes,
                ..VipPlan::default()
            },
        );
        local.update_plan(plan.vips.into_iter().map(|(ip, p)| (ip, Some(p))).collect());
        local
    }

    fn told(events: &[Event]) -> Vec<bool> {
        events
            .iter()
            .map(|e| match e {
                Event::Eligibility { eligible, .. } => *eligible,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_failed_install_hands_the_vip_to_others_until_the_backoff_ends() {
        let vip: IpAddr = "198.18.0.10".parse().unwrap();
        let mut local = local_with(vip);
        assert_eq!(told(&local.eligibility([])), [true]);
        let t0 = Instant::now();
        local.failed(vip, t0 + FAILED_BACKOFF);
        assert!(local.any_failed());
        assert_eq!(told(&local.eligibility([])), [false]);
        assert!(!local.failures_expired(t0));
        assert_eq!(told(&local.eligibility([])), Vec::<bool>::new());
        assert!(local.failures_expired(t0 + FAILED_BACKOFF));
        assert_eq!(told(&local.eligibility([])), [true]);
    }
}
