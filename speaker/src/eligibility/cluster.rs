//! The plan kept up to date change by change, for the agent. Watched
//! objects come in slimmed ([`super::slim`]) through [`Cluster::apply`];
//! [`Cluster::update`] then recomputes only what they touch:
//!
//! - a Service, or one of its EndpointSlices: that Service's VIPs (and
//!   those of the Services sharing them);
//! - a slice of a Service that is not ours: nothing;
//! - a Node whose slim form is unchanged (a heartbeat): nothing;
//! - a pool, an advertisement, or a Node that changed what it says: the
//!   whole plan, as before (they change what every VIP may do).
//!
//! It gives the same plan as [`super::plan`] on the same objects (tested
//! on random sequences of changes), and no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{
    Config, Contribution, Interner, Issue, Plan, ServiceKey, Settings, VipPlan, contribution,
    slice_service, tidy, vip_plan,
};
use crate::metallb::{IPAddressPool, L2Advertisement};

/// An object's namespace (empty for Nodes) and name.
pub type Key = (String, String);

/// The kinds the plan is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Services,
    EndpointSlices,
    Nodes,
    Pools,
    Advertisements,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Services,
        Kind::EndpointSlices,
        Kind::Nodes,
        Kind::Pools,
        Kind::Advertisements,
    ];
}

/// One watched object as it is now (`None`: gone, or not ours), or a kind
/// listed in full.
#[derive(Debug, Clone)]
// Moved once, through a queue that allocates as it fills: a box per
// change would cost more than the slack of the small variants.
#[allow(clippy::large_enum_variant)]
pub enum Change {
    Service(Key, Option<Service>),
    Slice(Key, Option<EndpointSlice>),
    Node(Key, Option<Node>),
    Pool(Key, Option<IPAddressPool>),
    Advertisement(Key, Option<L2Advertisement>),
    Listed(Kind),
}

/// What an update changed in the plan.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Each VIP whose plan changed, as it is now (`None`: no longer
    /// planned).
    pub vips: Vec<(IpAddr, Option<VipPlan>)>,
    /// The issues, when they changed.
    pub issues: Option<Vec<Issue>>,
    /// Whether any Node changed (the peers' addresses).
    pub nodes: bool,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.vips.is_empty() && self.issues.is_none() && !self.nodes
    }
}

/// Puts `value` at `key` in `map`, a HashMap or a BTreeMap (removes it
/// for `None`); false when that changes nothing.
macro_rules! replace {
    ($map:expr, $key:expr, $value:expr) => {{
        let (key, value) = ($key, $value);
        if $map.get(&key) == value.as_ref() {
            false
        } else {
            match value {
                Some(v) => {
                    $map.insert(key, v);
                }
                None => {
                    $map.remove(&key);
                }
            }
            true
        }
    }};
}

pub struct Cluster {
    settings: Settings,
    services: HashMap<ServiceKey, Service>,
    slices: HashMap<Key, EndpointSlice>,
    /// Each Service's slices, by the label that ties them.
    slices_of: HashMap<ServiceKey, BTreeSet<Key>>,
    nodes: BTreeMap<String, Node>,
    pools: BTreeMap<Key, IPAddressPool>,
    advertisements: BTreeMap<Key, L2Advertisement>,
    listed: BTreeSet<Kind>,
    /// `None` until every kind is listed, and after a change to it.
    config: Option<Config>,
    /// Services changed since the last update.
    dirty: BTreeSet<ServiceKey>,
    nodes_changed: bool,
    /// Each Service's VIPs in the plan, and its issues.
    planned: HashMap<ServiceKey, (BTreeSet<IpAddr>, Vec<Issue>)>,
    /// The Services using each VIP.
    users: BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
    plan: Plan,
    interner: Interner,
}

impl Cluster {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            nodes: BTreeMap::new(),
            pools: BTreeMap::new(),
            advertisements: BTreeMap::new(),
            listed: BTreeSet::new(),
            config: None,
            dirty: BTreeSet::new(),
            nodes_changed: false,
            planned: HashMap::new(),
            users: BTreeMap::new(),
            plan: Plan::default(),
            interner: Interner::default(),
        }
    }

    /// What Services the agent keeps (the watch slims them with it).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether every kind has been listed once: before that, a plan would
    /// withdraw VIPs that are merely not loaded yet.
    pub fn ready(&self) -> bool {
        Kind::ALL.iter().all(|k| self.listed.contains(k))
    }

    /// Node `name` as last seen.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// The plan as of the last update.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Takes one change in; nothing is computed until [`Self::update`].
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Service(key, svc) => {
                let svc = svc.filter(|s| self.settings.selects(s));
                if replace!(self.services, key.clone(), svc) {
                    self.dirty.insert(key);
                }
            }
            Change::Slice(key, slice) => {
                let before = self.slices.get(&key).and_then(slice_service);
                let after = slice.as_ref().and_then(slice_service);
                if !replace!(self.slices, key.clone(), slice) {
                    return;
                }
                for (svc, present) in [(before, false), (after, true)] {
                    let Some(svc) = svc else { continue };
                    let keys = self.slices_of.entry(svc.clone()).or_default();
                    match present && self.slices.contains_key(&key) {
                        true => keys.insert(key.clone()),
                        false => keys.remove(&key),
                    };
                    if keys.is_empty() {
                        self.slices_of.remove(&svc);
                    }
                    // A slice of a Service that is not ours changes nothing.
                    if self.services.contains_key(&svc) {
                        self.dirty.insert(svc);
                    }
                }
            }
            Change::Node((_, name), node) => {
                if replace!(self.nodes, name, node) {
                    self.config = None;
                    self.nodes_changed = true;
                }
            }
            Change::Pool(key, pool) => {
                if replace!(self.pools, key, pool) {
                    self.config = None;
                }
            }
            Change::Advertisement(key, ad) => {
                if replace!(self.advertisements, key, ad) {
                    self.config = None;
                }
            }
            Change::Listed(kind) => {
                self.listed.insert(kind);
            }
        }
    }

    /// Brings the plan up to date with the changes applied since the last
    /// call, and says what changed (nothing until every kind is listed).
    pub fn update(&mut self) -> Delta {
        if !self.ready() {
            return Delta::default();
        }
        let nodes = std::mem::take(&mut self.nodes_changed);
        let vips = match self.config.is_none() {
            true => self.recompute_all(),
            false => self.recompute_dirty(),
        };
        let issues = self.issues();
        let issues = (issues != self.plan.issues).then(|| {
            self.plan.issues.clone_from(&issues);
            issues
        });
        Delta {
            vips,
            issues,
            nodes,
        }
    }

    fn recompute_all(&mut self) -> Vec<(IpAddr, Option<VipPlan>)> {
        let config = Config::new(
            self.pools.values(),
            self.advertisements.values(),
            self.nodes.values(),
        );
        self.config = Some(config);
        self.dirty.clear();
        self.planned.clear();
        self.users.clear();
        let keys: Vec<ServiceKey> = self.services.keys().cloned().collect();
        let mut parts: BTreeMap<IpAddr, Vec<super::Part>> = BTreeMap::new();
        for key in keys {
            let c = self.contribution(&key);
            for (ip, part) in self.note(&key, c) {
                parts.entry(ip).or_default().push(part);
            }
        }
        let mut fresh: BTreeMap<IpAddr, VipPlan> = parts
            .into_iter()
            .map(|(ip, parts)| (ip, vip_plan(&parts, &mut self.interner)))
            .collect();
        let mut changed = Vec::new();
        for (ip, old) in &self.plan.vips {
            match fresh.get(ip) {
                Some(new) if new == old => {}
                new => changed.push((*ip, new.cloned())),
            }
        }
        for (ip, new) in &fresh {
            if !self.plan.vips.contains_key(ip) {
                changed.push((*ip, Some(new.clone())));
            }
        }
        changed.sort_by_key(|(ip, _)| *ip);
        std::mem::swap(&mut self.plan.vips, &mut fresh);
        drop(fresh);
        self.interner.prune();
        changed
    }

    fn recompute_dirty(&mut self) -> Vec<(IpAddr, Option<VipPlan>)> {
        let mut touched: BTreeSet<IpAddr> = BTreeSet::new();
        // Each changed Service's parts, computed once: the VIPs below use
        // them rather than computing them again.
        let mut fresh: HashMap<ServiceKey, Vec<(IpAddr, super::Part)>> = HashMap::new();
        for key in std::mem::take(&mut self.dirty) {
            if let Some((ips, _)) = self.planned.get(&key) {
                touched.extend(ips.iter().copied());
            }
            let c = self.contribution(&key);
            let parts = self.note(&key, c);
            touched.extend(parts.iter().map(|(ip, _)| *ip));
            fresh.insert(key, parts);
        }
        let mut changed = Vec::new();
        for ip in touched {
            let users: Vec<ServiceKey> = self
                .users
                .get(&ip)
                .map(|u| u.iter().cloned().collect())
                .unwrap_or_default();
            let mut parts: Vec<super::Part> = Vec::new();
            for key in &users {
                let theirs = match fresh.get(key) {
                    Some(ps) => ps
                        .iter()
                        .filter(|(at, _)| *at == ip)
                        .map(|(_, p)| p.clone())
                        .collect(),
                    None => self
                        .contribution(key)
                        .parts
                        .into_iter()
                        .filter(|(at, _)| *at == ip)
                        .map(|(_, p)| p)
                        .collect::<Vec<_>>(),
                };
                parts.extend(theirs);
            }
            let new = (!parts.is_empty()).then(|| vip_plan(&parts, &mut self.interner));
            if self.plan.vips.get(&ip) == new.as_ref() {
                continue;
            }
            match &new {
                Some(p) => self.plan.vips.insert(ip, p.clone()),
                None => self.plan.vips.remove(&ip),
            };
            changed.push((ip, new));
        }
        if !changed.is_empty() {
            self.interner.prune();
        }
        changed
    }

    /// What Service `key` adds to the plan now.
    fn contribution(&mut self, key: &ServiceKey) -> Contribution {
        let (Some(config), Some(svc)) = (&self.config, self.services.get(key)) else {
            return Contribution::default();
        };
        let slices: Vec<&EndpointSlice> = self
            .slices_of
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k))
            .collect();
        contribution(config, svc, &slices, &self.settings, &mut self.interner)
    }

    /// Records which VIPs Service `key` uses now, and its issues; returns
    /// its parts.
    fn note(&mut self, key: &ServiceKey, c: Contribution) -> Vec<(IpAddr, super::Part)> {
        let ips: BTreeSet<IpAddr> = c.parts.iter().map(|(ip, _)| *ip).collect();
        let before = match ips.is_empty() && c.issues.is_empty() {
            true => self.planned.remove(key),
            false => self.planned.insert(key.clone(), (ips.clone(), c.issues)),
        };
        for ip in before.map(|(ips, _)| ips).unwrap_or_default() {
            if let Some(users) = self.users.get_mut(&ip) {
                users.remove(key);
                if users.is_empty() {
                    self.users.remove(&ip);
                }
            }
        }
        for ip in &ips {
            self.users.entry(*ip).or_default().insert(key.clone());
        }
        c.parts
    }

    /// Every issue, from the configuration and each Service.
    fn issues(&self) -> Vec<Issue> {
        let config = self.config.as_ref().map(|c| c.issues()).unwrap_or_default();
        let services = self.planned.values().flat_map(|(_, issues)| issues);
        tidy(config.iter().chain(services).cloned().collect())
    }
}
