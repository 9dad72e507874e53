//! Which nodes may announce which VIPs: a pure function from a snapshot of
//! Services, EndpointSlices, Nodes and MetalLB's IPAddressPools and
//! L2Advertisements to a [`Plan`]. No I/O; the agent elects one announcer
//! per VIP among the nodes the plan allows. The rules, each with the test
//! that proves it, are in docs/eligibility.md.

pub(crate) mod addresses;
pub mod cluster;
pub mod probes;
pub(crate) mod selectors;
pub mod slim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::metallb::{IPAddressPool, L2Advertisement, unsupported_field};
use addresses::AddrRange;
use selectors::Selection;

/// A Service's `status.loadBalancer.ingress` (empty when unset).
pub fn ingress(svc: &Service) -> &[k8s_openapi::api::core::v1::LoadBalancerIngress] {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
}

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Nodes with this label (any value) never announce.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// The objects the plan is made from, as the agent's watches last saw them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub nodes: Vec<Node>,
    pub pools: Vec<IPAddressPool>,
    pub advertisements: Vec<L2Advertisement>,
}

/// Which Services are ours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Services whose `spec.loadBalancerClass` is exactly this are announced.
    pub load_balancer_class: Option<String>,
    /// Services without a `loadBalancerClass` are announced too.
    pub announce_classless: bool,
}

impl Settings {
    /// A `LoadBalancer` Service of ours: its class is ours, or it has none
    /// and classless Services are ours too.
    pub fn selects(&self, svc: &Service) -> bool {
        let Some(spec) = svc.spec.as_ref() else {
            return false;
        };
        spec.type_.as_deref() == Some("LoadBalancer")
            && match &spec.load_balancer_class {
                Some(class) => self.load_balancer_class.as_ref() == Some(class),
                None => self.announce_classless,
            }
    }
}

/// Names a Kubernetes object; `namespace` is empty for cluster-scoped ones.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &'static str, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A configuration problem, for an Event on `object` and the log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Issue {
    pub object: ObjectRef,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// Every VIP to announce and where from. It depends only on the set of
/// objects, not on their order in the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub vips: BTreeMap<IpAddr, VipPlan>,
    /// Sorted, without duplicates.
    pub issues: Vec<Issue>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VipPlan {
    /// Every Service using the address (several share one), sorted.
    pub services: Vec<ObjectRef>,
    /// Every pool containing it, as `namespace/name`, sorted.
    pub pools: Vec<String>,
    /// Nodes that may announce it, each with the interfaces to announce on
    /// (empty = the agent's default interfaces, as MetalLB's empty list means
    /// "all"). Empty when no node may: the VIP must be withdrawn everywhere.
    pub nodes: Nodes,
    /// What the local endpoint probe checks on each of those nodes that
    /// has something to check (probes.rs).
    pub probes: BTreeMap<String, BTreeSet<SocketAddr>>,
}

/// Interfaces a node announces on; `None` = the agent's default ones.
type Interfaces = Option<BTreeSet<String>>;

/// Default interfaces win: an advertisement without `interfaces` already
/// announces on all of them.
fn merge(into: &mut BTreeMap<String, Interfaces>, node: &str, add: &Interfaces) {
    match into.get_mut(node) {
        None => {
            into.insert(node.to_owned(), add.clone());
        }
        Some(have) => match (have.as_mut(), add) {
            (Some(have), Some(add)) => have.extend(add.iter().cloned()),
            _ => *have = None,
        },
    }
}

fn labels(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&NONE)
}

/// An object's namespace and name; `None` (skip it) without a name, which
/// objects from the API server always have.
fn ns_name(meta: &ObjectMeta) -> Option<(&str, &str)> {
    let name = meta.name.as_deref()?;
    Some((meta.namespace.as_deref().unwrap_or_default(), name))
}

struct Pool {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    ranges: Vec<AddrRange>,
    /// One per advertisement that selects this pool.
    grants: Vec<Grant>,
}

/// What one advertisement allows for the VIPs of a pool it selects: the
/// nodes it selects, for the Services it selects.
struct Grant {
    services: Selection,
    nodes: BTreeMap<String, Interfaces>,
}

impl Pool {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }
}

/// The part of the plan that pools, advertisements and Nodes decide, for
/// every Service alike: which nodes each pool's advertisements grant, and
/// the Nodes' own addresses. Built again only when one of those changes.
pub(crate) struct Config {
    /// Tells configurations apart (what each set of grants gives is
    /// remembered per configuration).
    id: u64,
    pools: Vec<Pool>,
    node_addresses: BTreeMap<IpAddr, String>,
    issues: Vec<Issue>,
}

impl Config {
    pub(crate) fn new<'a>(
        pools: impl IntoIterator<Item = &'a IPAddressPool>,
        advertisements: impl IntoIterator<Item = &'a L2Advertisement>,
        nodes: impl IntoIterator<Item = &'a Node> + Clone,
    ) -> Self {
        let mut issues = Vec::new();
        let mut pools = parse_pools(pools, &mut issues);
        // In name order, so the plan does not depend on the listing's.
        pools.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        report_overlaps(&pools, &mut issues);
        let may: Vec<(&str, &BTreeMap<String, String>)> = nodes
            .clone()
            .into_iter()
            .filter(|n| node_may_announce(n))
            .filter_map(|n| Some((n.metadata.name.as_deref()?, labels(&n.metadata))))
            .collect();
        for ad in advertisements {
            apply_advertisement(ad, &mut pools, &may, &mut issues);
        }
        static CONFIGS: AtomicU64 = AtomicU64::new(1);
        Self {
            id: CONFIGS.fetch_add(1, Ordering::Relaxed),
            pools,
            node_addresses: node_addresses(nodes),
            issues,
        }
    }

    /// Problems with the pools and advertisements.
    pub(crate) fn issues(&self) -> &[Issue] {
        &self.issues
    }
}

/// What one Service adds to the plan: a part per valid VIP, and its
/// problems.
#[derive(Default)]
pub(crate) struct Contribution {
    pub(crate) parts: Vec<(IpAddr, Part)>,
    pub(crate) issues: Vec<Issue>,
}

/// One Service's share of one VIP's plan.
#[derive(Clone)]
pub(crate) struct Part {
    service: ObjectRef,
    pools: BTreeSet<String>,
    nodes: Granted,
    probes: BTreeMap<String, BTreeSet<SocketAddr>>,
}

/// The nodes some grants give, for one Service's endpoints: merged (for
/// VIPs several Services share) and as the plan gives them.
#[derive(Clone)]
struct Granted {
    merged: Arc<BTreeMap<String, Interfaces>>,
    planned: Nodes,
}

/// What `svc` (with its EndpointSlices `slices`) adds to the plan under
/// `config`; nothing if it is not ours.
pub(crate) fn contribution(
    config: &Config,
    svc: &Service,
    slices: &[&EndpointSlice],
    settings: &Settings,
    interner: &mut Interner,
) -> Contribution {
    let mut out = Contribution::default();
    let Some(svc) = announced_service(svc, settings, &mut out.issues) else {
        return out;
    };
    let endpoints = endpoint_nodes(slices, &svc);
    let targets = if svc.local && svc.probe {
        probes::targets(slices)
    } else {
        BTreeMap::new()
    };
    for ip in &svc.ips {
        // Answering for a node's own address would take its traffic.
        if let Some(node) = config.node_addresses.get(ip) {
            out.issues.push(Issue {
                object: svc.object.clone(),
                message: format!(
                    "address {ip} is an address of Node {node}, not a Service's; it is \
                     not announced"
                ),
            });
            continue;
        }
        let containing: Vec<usize> = (0..config.pools.len())
            .filter(|&i| config.pools[i].contains(*ip))
            .collect();
        if containing.is_empty() {
            out.issues.push(Issue {
                object: svc.object.clone(),
                message: not_in_a_pool(&config.pools, *ip),
            });
            continue;
        }
        let grants: Vec<(usize, usize)> = containing
            .iter()
            .flat_map(|&p| {
                let pool = &config.pools[p];
                (0..pool.grants.len())
                    .filter(|&g| pool.grants[g].services.matches(svc.labels))
                    .map(move |g| (p, g))
            })
            .collect();
        let nodes = interner.granted(config, grants, &endpoints);
        out.parts.push((
            *ip,
            Part {
                service: svc.object.clone(),
                pools: containing.iter().map(|&p| config.pools[p].key()).collect(),
                nodes,
                probes: targets
                    .iter()
                    .map(|(node, t)| ((*node).to_owned(), t.clone()))
                    .collect(),
            },
        ));
    }
    out
}

/// The nodes that may announce each VIP, with their interfaces: shared by
/// every VIP with the same ones (with no `nodeSelectors`, every VIP has
/// every node), so a thousand VIPs do not hold a thousand copies, and
/// equal ones are the same pointer.
pub type Nodes = Arc<BTreeMap<String, BTreeSet<String>>>;

/// Hands out one [`Nodes`] per distinct value, and remembers what each set
/// of grants gives when every node's endpoints count: with a thousand
/// nodes, computed once per configuration, not once per Service.
#[derive(Default)]
pub(crate) struct Interner {
    values: HashSet<Nodes>,
    granted: HashMap<Vec<(usize, usize)>, Granted>,
    /// The configuration `granted` was computed for.
    config: u64,
}

impl Interner {
    fn intern(&mut self, nodes: BTreeMap<String, BTreeSet<String>>) -> Nodes {
        if let Some(have) = self.values.get(&nodes) {
            return have.clone();
        }
        let nodes = Arc::new(nodes);
        self.values.insert(nodes.clone());
        nodes
    }

    /// What `grants` (pool, grant) of `config` give the nodes `endpoints`
    /// allow.
    fn granted(
        &mut self,
        config: &Config,
        grants: Vec<(usize, usize)>,
        endpoints: &Allowed,
    ) -> Granted {
        if self.config != config.id {
            self.granted.clear();
            self.config = config.id;
        }
        let grant = |(p, g): &(usize, usize)| &config.pools[*p].grants[*g];
        let mut merged: BTreeMap<String, Interfaces> = BTreeMap::new();
        match endpoints {
            Allowed::All => {
                if let Some(have) = self.granted.get(&grants) {
                    return have.clone();
                }
                for (node, ifaces) in grants.iter().flat_map(|g| &grant(g).nodes) {
                    merge(&mut merged, node, ifaces);
                }
            }
            // Few nodes: look each up rather than go through all.
            Allowed::Only(allowed) => {
                for node in allowed {
                    for ifaces in grants.iter().filter_map(|g| grant(g).nodes.get(*node)) {
                        merge(&mut merged, node, ifaces);
                    }
                }
            }
        }
        let out = Granted {
            planned: self.intern(planned(&merged)),
            merged: Arc::new(merged),
        };
        if matches!(endpoints, Allowed::All) {
            self.granted.insert(grants, out.clone());
        }
        out
    }

    /// Forgets the values no plan uses any more.
    pub(crate) fn prune(&mut self) {
        self.values.retain(|n| Arc::strong_count(n) > 1);
    }
}

/// Nodes as the plan gives them: no interfaces named = the defaults.
fn planned(merged: &BTreeMap<String, Interfaces>) -> BTreeMap<String, BTreeSet<String>> {
    merged
        .iter()
        .map(|(n, ifaces)| (n.clone(), ifaces.clone().unwrap_or_default()))
        .collect()
}

/// A VIP's plan from the parts of every Service using it.
pub(crate) fn vip_plan(parts: &[Part], interner: &mut Interner) -> VipPlan {
    let mut services = BTreeSet::new();
    let mut pools = BTreeSet::new();
    let mut probes: BTreeMap<String, BTreeSet<SocketAddr>> = BTreeMap::new();
    for part in parts {
        services.insert(part.service.clone());
        pools.extend(part.pools.iter().cloned());
        for (node, t) in &part.probes {
            probes
                .entry(node.clone())
                .or_default()
                .extend(t.iter().copied());
        }
    }
    let nodes = match parts {
        [one] => one.nodes.planned.clone(),
        // Shared by several Services: the union.
        _ => {
            let mut merged: BTreeMap<String, Interfaces> = BTreeMap::new();
            for part in parts {
                for (node, ifaces) in part.nodes.merged.iter() {
                    merge(&mut merged, node, ifaces);
                }
            }
            interner.intern(planned(&merged))
        }
    };
    probes.retain(|node, _| nodes.contains_key(node));
    VipPlan {
        services: services.into_iter().collect(),
        pools: pools.into_iter().collect(),
        nodes,
        probes,
    }
}

/// Sorted, without duplicates.
pub(crate) fn tidy(mut issues: Vec<Issue>) -> Vec<Issue> {
    issues.sort();
    issues.dedup();
    issues
}

/// The plan for `snapshot`. Never fails and never panics: a bad object is
/// skipped or reported in [`Plan::issues`] and leaves the other VIPs as
/// they would be without it. The agent keeps the same plan up to date
/// change by change ([`cluster::Cluster`]); this computes it whole.
pub fn plan(snapshot: &Snapshot, settings: &Settings) -> Plan {
    let config = Config::new(&snapshot.pools, &snapshot.advertisements, &snapshot.nodes);
    let mut issues = config.issues.clone();
    let mut interner = Interner::default();
    let mut parts: BTreeMap<IpAddr, Vec<Part>> = BTreeMap::new();
    for svc in &snapshot.services {
        let slices = service_slices(&snapshot.endpoint_slices, svc);
        let c = contribution(&config, svc, &slices, settings, &mut interner);
        issues.extend(c.issues);
        for (ip, part) in c.parts {
            parts.entry(ip).or_default().push(part);
        }
    }
    let vips = parts
        .into_iter()
        .map(|(ip, parts)| (ip, vip_plan(&parts, &mut interner)))
        .collect();
    Plan {
        vips,
        issues: tidy(issues),
    }
}

/// A bad entry is reported and left out; the rest of the pool still works.
fn parse_pools<'a>(
    pools: impl IntoIterator<Item = &'a IPAddressPool>,
    issues: &mut Vec<Issue>,
) -> Vec<Pool> {
    let mut out = Vec::new();
    for pool in pools {
        let Some((namespace, name)) = ns_name(&pool.metadata) else {
            continue;
        };
        let mut ranges = Vec::new();
        for entry in &pool.spec.addresses {
            match AddrRange::parse(entry) {
                Ok(r) => ranges.push(r),
                Err(e) => issues.push(Issue {
                    object: ObjectRef::new("IPAddressPool", namespace, name),
                    message: format!("bad address entry {entry:?}: {e}"),
                }),
            }
        }
        out.push(Pool {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels: labels(&pool.metadata).clone(),
            ranges,
            grants: Vec::new(),
        });
    }
    out
}

/// One Issue on each of two overlapping pools, whatever the number of
/// overlapping entries.
fn report_overlaps(pools: &[Pool], issues: &mut Vec<Issue>) {
    for (i, a) in pools.iter().enumerate() {
        for b in pools.iter().skip(i + 1) {
            let overlap = a
                .ranges
                .iter()
                .any(|ra| b.ranges.iter().any(|rb| ra.overlaps(rb)));
            if overlap {
                for (this, other) in [(a, b), (b, a)] {
                    issues.push(Issue {
                        object: ObjectRef::new("IPAddressPool", &this.namespace, &this.name),
                        message: format!("overlaps IPAddressPool {}", other.key()),
                    });
                }
            }
        }
    }
}

/// Ready, network up, and not excluded from load balancers.
pub(crate) fn node_may_announce(node: &Node) -> bool {
    let condition = |kind: &str| {
        let conditions = node.status.as_ref().and_then(|s| s.conditions.as_deref());
        conditions
            .unwrap_or_default()
            .iter()
            .find(|c| c.type_ == kind)
            .map(|c| c.status.as_str())
    };
    !labels(&node.metadata).contains_key(EXCLUDE_LABEL)
        && condition("Ready") == Some("True")
        && condition("NetworkUnavailable") != Some("True")
}

/// Every address a Node reports, with the Node's name.
fn node_addresses<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> BTreeMap<IpAddr, String> {
    let mut out: BTreeMap<IpAddr, String> = BTreeMap::new();
    for node in nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        let listed = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten());
        for ip in listed.filter_map(|a| a.address.parse::<IpAddr>().ok()) {
            // Two Nodes claiming one address: the first by name, so the
            // plan does not depend on the order the Nodes are listed in.
            match out.get(&ip) {
                Some(have) if have.as_str() <= name => {}
                _ => {
                    out.insert(ip, name.to_owned());
                }
            }
        }
    }
    out
}

/// Why `ip`, in no pool, is not announced: most often a typo, but it may
/// be the network or broadcast address of a pool's CIDR.
fn not_in_a_pool(pools: &[Pool], ip: IpAddr) -> String {
    let edge = pools.iter().find_map(|p| {
        let what = p.ranges.iter().find_map(|r| r.left_out(ip))?;
        Some((p.key(), what))
    });
    match edge {
        Some((pool, what)) => format!(
            "address {ip} is the {what} address of a CIDR in IPAddressPool {pool}, which is \
             not announced; list it in the pool as a range or a /32 to announce it"
        ),
        None => format!("address {ip} is in no IPAddressPool"),
    }
}

/// Records on each pool the advertisement selects the nodes and Services
/// it selects. Pools are matched in the advertisement's own namespace,
/// where MetalLB keeps both.
fn apply_advertisement(
    ad: &L2Advertisement,
    pools: &mut [Pool],
    nodes: &[(&str, &BTreeMap<String, String>)],
    issues: &mut Vec<Issue>,
) {
    let Some((namespace, name)) = ns_name(&ad.metadata) else {
        return;
    };
    let object = ObjectRef::new("L2Advertisement", namespace, name);
    let mut report = |message: String| {
        issues.push(Issue {
            object: object.clone(),
            message,
        })
    };
    let spec = &ad.spec;
    for path in spec.unsupported() {
        report(unsupported_field(&path));
    }
    let names = spec.ip_address_pools.as_deref().unwrap_or_default();
    let pool_selectors = spec
        .ip_address_pool_selectors
        .as_deref()
        .unwrap_or_default();
    // Neither names nor selectors: every pool (MetalLB's default).
    let all_pools = names.is_empty() && pool_selectors.is_empty();
    let (by_labels, errors) = Selection::parse(pool_selectors, "ipAddressPoolSelectors");
    errors.into_iter().for_each(&mut report);
    let (node_selection, errors) = Selection::parse(
        spec.node_selectors.as_deref().unwrap_or_default(),
        "nodeSelectors",
    );
    errors.into_iter().for_each(&mut report);
    let (services, errors) = Selection::parse(
        spec.service_selectors.as_deref().unwrap_or_default(),
        "serviceSelectors",
    );
    errors.into_iter().for_each(&mut report);
    for wanted in names {
        if !pools
            .iter()
            .any(|p| p.namespace == namespace && p.name == *wanted)
        {
            report(format!("unknown IPAddressPool {wanted}"));
        }
    }

    let interfaces: Interfaces = spec
        .interfaces
        .as_ref()
        .filter(|i| !i.is_empty())
        .map(|i| i.iter().cloned().collect());
    let mut selected_nodes = BTreeMap::new();
    for (name, _) in nodes.iter().filter(|(_, l)| node_selection.matches(l)) {
        merge(&mut selected_nodes, name, &interfaces);
    }
    let mut selects_any = false;
    for pool in pools.iter_mut().filter(|p| p.namespace == namespace) {
        // An absent selector list parses as "all"; here it must add nothing.
        let selected = all_pools
            || names.contains(&pool.name)
            || (!pool_selectors.is_empty() && by_labels.matches(&pool.labels));
        if selected {
            selects_any = true;
            pool.grants.push(Grant {
                services: services.clone(),
                nodes: selected_nodes.clone(),
            });
        }
    }
    if !selects_any {
        report("selects no IPAddressPool".to_owned());
    }
}

/// A LoadBalancer Service of ours, with its valid VIPs.
struct Announced<'a> {
    object: ObjectRef,
    labels: &'a BTreeMap<String, String>,
    local: bool,
    /// Not turned off for the local endpoint probe.
    probe: bool,
    ips: BTreeSet<IpAddr>,
}

fn announced_service<'a>(
    svc: &'a Service,
    settings: &Settings,
    issues: &mut Vec<Issue>,
) -> Option<Announced<'a>> {
    let (namespace, name) = ns_name(&svc.metadata)?;
    let spec = svc.spec.as_ref()?;
    if !settings.selects(svc) {
        return None;
    }
    let object = ObjectRef::new("Service", namespace, name);
    let ingress = ingress(svc);
    let mut ips = BTreeSet::new();
    // Entries with only a hostname are not ours to answer ARP for.
    for raw in ingress.iter().filter_map(|i| i.ip.as_deref()) {
        match raw.parse() {
            Ok(ip) => {
                ips.insert(ip);
            }
            Err(_) => issues.push(Issue {
                object: object.clone(),
                message: format!("bad address {raw:?} in status.loadBalancer.ingress"),
            }),
        }
    }
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    let probe = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(probes::PROBE_ANNOTATION))
        .is_none_or(|v| v != "off");
    Some(Announced {
        object,
        labels: labels(&svc.metadata),
        local,
        probe,
        ips,
    })
}

/// Which nodes the Service's endpoints let announce.
enum Allowed<'a> {
    All,
    Only(BTreeSet<&'a str>),
}

/// The EndpointSlices of `svc`: those its label names, in its namespace.
fn service_slices<'a>(slices: &'a [EndpointSlice], svc: &Service) -> Vec<&'a EndpointSlice> {
    let Some(key) = service_key(svc) else {
        return Vec::new();
    };
    slices
        .iter()
        .filter(|s| slice_service(s).as_ref() == Some(&key))
        .collect()
}

/// A Service's namespace and name.
pub(crate) type ServiceKey = (String, String);

pub(crate) fn service_key(svc: &Service) -> Option<ServiceKey> {
    let (ns, name) = ns_name(&svc.metadata)?;
    Some((ns.to_owned(), name.to_owned()))
}

/// The Service an EndpointSlice belongs to: the one its label names, in
/// its namespace.
pub(crate) fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    let name = labels(&slice.metadata).get(SERVICE_NAME_LABEL)?;
    let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
    Some((ns.to_owned(), name.clone()))
}

/// `Local`: the nodes with a ready endpoint. `Cluster`: every node, once
/// any endpoint is ready. A missing `ready` means ready (EndpointConditions).
fn endpoint_nodes<'a>(slices: &[&'a EndpointSlice], svc: &Announced) -> Allowed<'a> {
    let mut ready = slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true));
    if svc.local {
        Allowed::Only(ready.filter_map(|e| e.node_name.as_deref()).collect())
    } else if ready.next().is_some() {
        Allowed::All
    } else {
        Allowed::Only(BTreeSet::new())
    }
}
