//! What this node can do for each VIP: the plan says which nodes may
//! announce it and on which interfaces; this node's links and their carrier
//! say whether it can. The result goes to the election as eligibility,
//! only where it changed (each event makes the election look at every VIP,
//! which adds up with a thousand of them).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use tracing::{info, warn};

use crate::{
    election::Event,
    eligibility::{ObjectRef, Plan},
    netdev::Link,
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
    told: BTreeMap<IpAddr, (bool, Vec<String>)>,
}

impl Local {
    pub fn new(node: &str, default_links: Vec<Link>) -> Self {
        Self {
            node: node.to_string(),
            default_links,
            plan: Plan::default(),
            links_by_name: HashMap::new(),
            carriers: BTreeMap::new(),
            told: BTreeMap::new(),
        }
    }

    pub fn set_plan(&mut self, plan: Plan) {
        self.plan = plan;
    }

    /// The Services using `vip`, for Events.
    pub fn services(&self, vip: IpAddr) -> &[ObjectRef] {
        self.plan
            .vips
            .get(&vip)
            .map_or(&[], |p| p.services.as_slice())
    }

    /// The links this node announces `vip` on: the plan's interfaces, or
    /// the default ones.
    pub fn links(&mut self, vip: IpAddr) -> Vec<Link> {
        let names: Vec<String> = self
            .plan
            .vips
            .get(&vip)
            .and_then(|p| p.nodes.get(&self.node))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
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
        let mut out = Vec::new();
        for vip in vips {
            let candidates: Vec<String> = self
                .plan
                .vips
                .get(&vip)
                .map(|p| p.nodes.keys().cloned().collect())
                .unwrap_or_default();
            let planned = candidates.contains(&self.node);
            let links = if planned { self.links(vip) } else { Vec::new() };
            let up = links
                .iter()
                .any(|l| *self.carriers.get(&l.iface.ifindex).unwrap_or(&true));
            let now = (planned && up, candidates);
            if self.told.get(&vip) == Some(&now) {
                continue;
            }
            self.told.insert(vip, now.clone());
            out.push(Event::Eligibility {
                vip,
                eligible: now.0,
                candidates: now.1,
            });
        }
        out
    }

    /// Polls the carrier of every link in use; true when one changed.
    pub fn carriers_changed(&mut self) -> bool {
        let mut changed = false;
        let links = self
            .default_links
            .iter()
            .chain(self.links_by_name.values().flatten());
        for link in links {
            let up = link.iface.is_running().unwrap_or(false);
            if self.carriers.insert(link.iface.ifindex, up) != Some(up) {
                info!(interface = %link.iface.name, up, "carrier");
                changed = true;
            }
        }
        changed
    }
}
