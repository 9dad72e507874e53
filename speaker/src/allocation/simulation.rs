//! Seeded random sequences of Service creations, changes and deletions,
//! pool and Namespace edits and controller restarts, checked after every
//! step against the allocator's promises (docs/allocation.md, rule 9):
//! no address held by two Services that may not share it, nothing lost or
//! moved by a restart, no address handed out from outside the pools.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Service};
use serde_json::{Value, json};

use super::tests::{classless, ip, pool, svc, written};
use super::*;
use crate::eligibility::addresses::AddrRange;

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())].clone()
    }
}

const NAMESPACES: [&str; 3] = ["default", "team-a", "team-b"];
/// Small on purpose: pools run out, overlap and straddle .255/.0.
const ENTRIES: [&str; 6] = [
    "198.18.0.0/30",
    "198.18.0.4-198.18.0.6",
    "198.18.0.254-198.18.1.1",
    "198.18.2.0/31",
    "2001:db8::/126",
    "2001:db8::10-2001:db8::12",
];
const REQUESTS: [&str; 8] = [
    "198.18.0.1",
    "198.18.0.5",
    "198.18.1.0",
    "198.18.2.1",
    "2001:db8::1",
    "2001:db8::11",
    "198.18.0.2,2001:db8::2",
    "203.0.113.9",
];
const SERVICES: usize = 8;

fn random_pools(rng: &mut Rng) -> Vec<IPAddressPool> {
    let count = if rng.chance(10) { 0 } else { 1 + rng.below(3) };
    (0..count)
        .map(|i| {
            let entries: Vec<&str> = (0..1 + rng.below(3)).map(|_| rng.pick(&ENTRIES)).collect();
            let mut spec = json!({
                "autoAssign": !rng.chance(20),
                "avoidBuggyIPs": rng.chance(30),
            });
            if rng.chance(40) {
                let mut alloc = json!({"priority": rng.below(3)});
                if rng.chance(40) {
                    alloc["namespaces"] = json!([rng.pick(&NAMESPACES)]);
                }
                if rng.chance(30) {
                    alloc["namespaceSelectors"] = json!([{"matchLabels": {"team": "a"}}]);
                }
                if rng.chance(30) {
                    alloc["serviceSelectors"] = json!([{"matchLabels": {"app": "web"}}]);
                }
                spec["serviceAllocation"] = alloc;
            }
            pool(&format!("p{i}"), &entries, spec)
        })
        .collect()
}

fn name(i: usize) -> String {
    format!("{}/s{i}", NAMESPACES[i % NAMESPACES.len()])
}

fn random_service(rng: &mut Rng, id: &str) -> Service {
    let (policy, families) = match rng.below(6) {
        0 => ("SingleStack", json!(["IPv4"])),
        1 => ("SingleStack", json!(["IPv6"])),
        2 => ("PreferDualStack", json!(["IPv4", "IPv6"])),
        3 => ("PreferDualStack", json!(["IPv6", "IPv4"])),
        4 => ("PreferDualStack", json!(["IPv4"])),
        _ => ("RequireDualStack", json!(["IPv4", "IPv6"])),
    };
    let ports: Vec<&str> = ["TCP/80", "TCP/443", "UDP/53"]
        .into_iter()
        .filter(|_| rng.chance(50))
        .collect();
    let mut annotations = serde_json::Map::new();
    if rng.chance(60) {
        annotations.insert("share".into(), json!(rng.pick(&["k1", "k2"])));
    }
    if rng.chance(15) {
        annotations.insert("ips".into(), json!(rng.pick(&REQUESTS)));
    }
    if rng.chance(15) {
        annotations.insert("pool".into(), json!(rng.pick(&["p0", "p1", "p2", "p3"])));
    }
    let mut patch = json!({
        "policy": policy,
        "families": families,
        "ports": ports,
        "ann": annotations,
        "labels": {"app": rng.pick(&["web", "db"])},
    });
    if rng.chance(5) {
        patch["loadBalancerIP"] = json!(rng.pick(&REQUESTS[..6]));
    }
    if rng.chance(30) {
        patch["externalTrafficPolicy"] = json!("Local");
        patch["selector"] = json!({"app": rng.pick(&["a", "b"])});
    }
    if rng.chance(8) {
        patch["type"] = json!("ClusterIP");
    }
    if rng.chance(5) {
        patch["loadBalancerClass"] = json!("other");
    }
    svc(id, patch)
}

fn namespace(name: &str, labels: Value) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("ns")
}

fn status(s: &Service) -> Vec<IpAddr> {
    let ingress = crate::eligibility::ingress(s);
    let mut ips: Vec<IpAddr> = ingress
        .iter()
        .filter_map(|i| i.ip.as_deref())
        .map(ip)
        .collect();
    ips.sort();
    ips
}

/// The sharing rule, written again from the Service objects.
fn may_share(a: &Service, b: &Service) -> bool {
    let key = |s: &Service| {
        s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("metallb.io/allow-shared-ip").cloned())
            .unwrap_or_default()
    };
    let backend = |s: &Service| {
        let spec = s.spec.as_ref().expect("spec");
        if spec.external_traffic_policy.as_deref() == Some("Local") {
            format!("{:?}", spec.selector)
        } else {
            String::new()
        }
    };
    let ports = |s: &Service| -> BTreeSet<(String, i32)> {
        let spec = s.spec.as_ref().expect("spec");
        let ports = spec.ports.as_deref().unwrap_or_default();
        ports
            .iter()
            .map(|p| (p.protocol.clone().unwrap_or_default(), p.port))
            .collect()
    };
    !key(a).is_empty()
        && key(a) == key(b)
        && backend(a) == backend(b)
        && ports(a).is_disjoint(&ports(b))
}

/// Whether some pool contains `ip`, from the pool objects.
fn in_a_pool(pools: &[IPAddressPool], ip: IpAddr) -> bool {
    pools.iter().any(|p| {
        let avoid = p.spec.avoid_buggy_i_ps == Some(true);
        let buggy = matches!(ip, IpAddr::V4(a) if matches!(a.octets()[3], 0 | 255));
        !(avoid && buggy)
            && p.spec
                .addresses
                .iter()
                .filter_map(|e| AddrRange::parse(e).ok())
                .any(|r| r.contains(ip))
    })
}

/// What the sequences went through, so that a generator change cannot
/// quietly make the test vacuous.
#[derive(Debug, Default)]
struct Seen {
    events: BTreeMap<String, usize>,
}

impl Seen {
    fn note(&mut self, what: impl Into<String>) {
        *self.events.entry(what.into()).or_default() += 1;
    }

    fn outcome(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Assigned(ips) if ips.len() == 2 => self.note("assigned two"),
            Outcome::Assigned(_) => self.note("assigned"),
            Outcome::Refused { reason, kept } => {
                let debug = format!("{reason:?}");
                let variant = debug.split([' ', '(']).next().unwrap_or_default();
                self.note(format!("refused {variant}"));
                if !kept.is_empty() {
                    self.note("refused, kept");
                }
            }
            Outcome::Released => self.note("released"),
            Outcome::Unchanged | Outcome::NotOurs => {}
        }
    }
}

struct World {
    seen: Seen,
    alloc: Allocator,
    pools: Vec<IPAddressPool>,
    namespaces: Vec<Namespace>,
    /// The cluster: each Service as the API server has it, with the status
    /// the controller wrote.
    services: BTreeMap<String, Service>,
}

impl World {
    fn key(id: &str) -> (&str, &str) {
        id.split_once('/').expect("ns/name")
    }

    /// One update, written back; new addresses must come from a pool.
    fn update(&mut self, id: &str) -> Outcome {
        let before = &self.services[id];
        let outcome = self.alloc.update(before);
        self.seen.outcome(&outcome);
        if let Outcome::Assigned(ips) = &outcome {
            let had = status(before);
            for ip in ips.iter().filter(|ip| !had.contains(ip)) {
                assert!(in_a_pool(&self.pools, *ip), "{id} got {ip}, in no pool");
            }
        }
        let after = written(before, &outcome);
        self.services.insert(id.to_owned(), after);
        outcome
    }

    fn update_all(&mut self) -> Vec<Outcome> {
        let ids: Vec<String> = self.services.keys().cloned().collect();
        ids.iter().map(|id| self.update(id)).collect()
    }

    /// A new controller: pools, Namespaces, then every Service restored
    /// (in reverse order, to show order does not matter).
    fn restarted(&mut self) -> Allocator {
        let mut fresh = Allocator::new(classless());
        for ns in &self.namespaces {
            fresh.set_namespace(ns);
        }
        fresh.set_pools(&self.pools);
        for s in self.services.values().rev() {
            for issue in fresh.restore(s) {
                assert!(issue.message.contains("in no IPAddressPool"), "{issue}");
                self.seen.note("restored an address in no pool");
            }
            if !status(s).is_empty() {
                self.seen.note("restored an address");
            }
        }
        fresh
    }

    fn check(&mut self) {
        // The statuses and the allocator agree.
        for (id, s) in &self.services {
            let (ns, name) = Self::key(id);
            assert_eq!(self.alloc.addresses(ns, name), status(s).as_slice(), "{id}");
        }
        // No address held by two Services that may not share it.
        let mut holders: BTreeMap<IpAddr, Vec<&Service>> = BTreeMap::new();
        for s in self.services.values() {
            for ip in status(s) {
                holders.entry(ip).or_default().push(s);
            }
        }
        for (ip, users) in holders {
            if users.len() > 1 {
                self.seen.note("address shared");
            }
            for (i, a) in users.iter().enumerate() {
                for b in &users[i + 1..] {
                    assert!(
                        may_share(a, b),
                        "{ip} held by {:?} and {:?}",
                        a.metadata.name,
                        b.metadata.name
                    );
                }
            }
        }
        for count in self.alloc.counts() {
            assert!(u128::from(count.in_use()) <= count.total(), "{count:?}");
        }
        self.alloc.ledger.check_runs();
    }
}

fn run_sequence(seed: u64, steps: usize, seen: Seen) -> Seen {
    let mut rng = Rng(seed);
    let mut world = World {
        seen,
        alloc: Allocator::new(classless()),
        pools: Vec::new(),
        namespaces: NAMESPACES.iter().map(|n| namespace(n, json!({}))).collect(),
        services: BTreeMap::new(),
    };
    for ns in &world.namespaces {
        world.alloc.set_namespace(ns);
    }
    world.pools = random_pools(&mut rng);
    world.alloc.set_pools(&world.pools);
    for step in 0..steps {
        let id = name(rng.below(SERVICES));
        match rng.below(100) {
            0..50 => {
                let mut s = random_service(&mut rng, &id);
                s.status = world.services.get(&id).and_then(|old| old.status.clone());
                world.services.insert(id.clone(), s);
                world.update(&id);
            }
            50..62 => {
                let (ns, name) = World::key(&id);
                world.alloc.remove(ns, name);
                world.services.remove(&id);
                world.update_all();
            }
            62..74 => {
                world.pools = random_pools(&mut rng);
                world.alloc.set_pools(&world.pools);
                world.update_all();
            }
            74..80 => {
                let labels = json!({"team": rng.pick(&["a", "b"])});
                let ns = namespace(rng.pick(&NAMESPACES[1..]), labels);
                world.alloc.set_namespace(&ns);
                world
                    .namespaces
                    .retain(|n| n.metadata.name != ns.metadata.name);
                world.namespaces.push(ns);
                world.update_all();
            }
            _ => {
                // Restart: the fresh allocator holds what the old one held,
                // and then decides exactly as the old one would have.
                let fresh = world.restarted();
                for id in world.services.keys() {
                    let (ns, name) = World::key(id);
                    let (now, then) = (fresh.addresses(ns, name), world.alloc.addresses(ns, name));
                    assert_eq!(now, then, "seed {seed} step {step}: {id} after restart");
                }
                let mut old = World {
                    seen: Seen::default(),
                    alloc: std::mem::replace(&mut world.alloc, fresh),
                    pools: world.pools.clone(),
                    namespaces: world.namespaces.clone(),
                    services: world.services.clone(),
                };
                let from_old = old.update_all();
                let from_fresh = world.update_all();
                let context = format!("seed {seed} step {step}: restart changed decisions");
                assert_eq!(from_fresh, from_old, "{context}");
                assert_eq!(world.services, old.services, "{context}");
            }
        }
        world.check();
    }
    world.seen
}

#[test]
fn random_sequences_keep_the_promises() {
    let mut seen = Seen::default();
    for seed in 0..400 {
        seen = run_sequence(seed, 40, seen);
    }
    for what in [
        "assigned",
        "assigned two",
        "released",
        "address shared",
        "restored an address",
        "restored an address in no pool",
        "refused, kept",
        "refused InUse",
        "refused NoFreeAddress",
        "refused PoolExhausted",
        "refused NotInAnyPool",
        "refused UnknownPool",
        "refused WrongFamilies",
        "refused PoolNotAllowed",
    ] {
        assert!(
            seen.events.contains_key(what),
            "never {what}: {:#?}",
            seen.events
        );
    }
}
