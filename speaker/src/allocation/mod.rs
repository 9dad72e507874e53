//! The addresses of LoadBalancer Services, for `speaker controller`: the
//! rules of MetalLB's controller (`internal/allocator`,
//! `controller/service.go`) as an explicit state machine without I/O. The
//! controller loop gives it pools, Namespaces and Services, and writes what
//! it decides to `status.loadBalancer.ingress`. The rules, each with the
//! test that proves it, are in docs/allocation.md.
//!
//! Driving it:
//! - at start-up, [`Allocator::set_pools`], [`Allocator::set_namespace`]
//!   for each Namespace, then [`Allocator::restore`] for every Service
//!   before any [`Allocator::update`], so that addresses already given out
//!   are taken back by their Services, not handed to others;
//! - [`Allocator::update`] for each Service added or changed, and
//!   [`Allocator::remove`] for each one deleted;
//! - after a change to pools or Namespaces, `update` every Service (as
//!   MetalLB reprocesses all); after a release, `update` the
//!   [`Allocator::waiting`] ones.

mod ledger;
mod pools;
mod refusal;
mod request;
mod sharing;
#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Service};

pub use crate::eligibility::{Issue, ObjectRef, Settings};
use crate::metallb::IPAddressPool;
use ledger::{Held, Ledger};
use pools::{Pool, Pools, Who};
pub use refusal::{Need, Refusal};
pub use request::Family;
use request::{Request, Stack};
pub use sharing::{Port, SharingConflict};

/// What to do with a Service after [`Allocator::update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Write these addresses (sorted) to `status.loadBalancer.ingress`.
    Assigned(Vec<IpAddr>),
    /// The status already shows the Service's addresses.
    Unchanged,
    /// The Service cannot have what it asks for: write `kept` to the status
    /// (usually empty; its current addresses when only its request is
    /// unreadable, which MetalLB leaves in place) and put `reason` in a
    /// Warning Event.
    Refused { reason: Refusal, kept: Vec<IpAddr> },
    /// It is no longer ours (deleted class, not a LoadBalancer): its
    /// addresses were freed; clear the status if it still shows them.
    Released,
    /// Not ours, and it held nothing.
    NotOurs,
}

/// Addresses of one family in a pool, for MetalLB's
/// `metallb_allocator_addresses_in_use_total` and `..._addresses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FamilyCount {
    pub in_use: u64,
    /// Saturates at `u128::MAX` (`::/0`).
    pub total: u128,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolCount {
    pub pool: String,
    pub ipv4: FamilyCount,
    pub ipv6: FamilyCount,
}

impl PoolCount {
    pub fn in_use(&self) -> u64 {
        self.ipv4.in_use + self.ipv6.in_use
    }

    pub fn total(&self) -> u128 {
        self.ipv4.total.saturating_add(self.ipv6.total)
    }
}

/// The allocator's whole state: rebuilt from the objects at start-up, so
/// a restart loses nothing.
#[derive(Debug, Default)]
pub struct Allocator {
    settings: Settings,
    pools: Pools,
    /// Labels of each Namespace, for `namespaceSelectors`.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    ledger: Ledger,
    /// Services refused by their last update.
    waiting: BTreeSet<ObjectRef>,
}

/// What becomes of a Service's current addresses.
enum Verdict {
    Keep,
    /// Keep them, but the request is unreadable.
    KeepAndRefuse(Refusal),
    /// Free them and allocate again.
    Drop,
}

fn service_ref(svc: &Service) -> Option<ObjectRef> {
    let name = svc.metadata.name.as_deref()?;
    let namespace = svc.metadata.namespace.as_deref().unwrap_or_default();
    Some(ObjectRef::new("Service", namespace, name))
}

fn out_of_pool(service: &ObjectRef, ip: IpAddr) -> Issue {
    Issue {
        object: service.clone(),
        message: format!(
            "address {ip} is in no IPAddressPool; the Service keeps it until it asks for \
             another address or is deleted"
        ),
    }
}

impl Allocator {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// Replaces the pools. Nothing is taken away here: an address left in
    /// no pool stays with its Service and is reported, every time, until
    /// the Service lets go of it. Problems in the pools are reported too.
    pub fn set_pools(&mut self, pools: &[IPAddressPool]) -> Vec<Issue> {
        let (pools, mut issues) = Pools::parse(pools);
        self.pools = pools;
        let pools = &self.pools;
        self.ledger.recount(|ip| pools.owner(ip).map(str::to_owned));
        for (ip, users) in self.ledger.outside_pools() {
            issues.extend(users.iter().map(|user| out_of_pool(user, ip)));
        }
        issues.sort();
        issues.dedup();
        issues
    }

    /// Adds or replaces a Namespace (its labels, for `namespaceSelectors`).
    pub fn set_namespace(&mut self, ns: &Namespace) {
        if let Some(name) = ns.metadata.name.as_deref() {
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            self.namespaces.insert(name.to_owned(), labels);
        }
    }

    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// Takes back the addresses `svc`'s status shows, as they are: at
    /// start-up, before any `update`. Only a clash with a Service restored
    /// before it is refused (reported; `update` then gives it a new
    /// address); an address in no pool is kept and reported.
    pub fn restore(&mut self, svc: &Service) -> Vec<Issue> {
        let Some(service) = service_ref(svc) else {
            return Vec::new();
        };
        if !self.settings.selects(svc) {
            return Vec::new();
        }
        let req = Request::read(svc, service);
        if req.status.is_empty() {
            return Vec::new();
        }
        for &ip in &req.status {
            if let Some((by, why)) = self.ledger.conflict(&req.service, ip, &req.sharing) {
                return vec![Issue {
                    object: req.service,
                    message: format!(
                        "address {ip} in its status is also held by {by} and cannot be \
                         shared ({why}); it will get a new address"
                    ),
                }];
            }
        }
        let issues = req
            .status
            .iter()
            .filter(|ip| self.pools.owner(**ip).is_none())
            .map(|ip| out_of_pool(&req.service, *ip))
            .collect();
        self.claim(&req, req.status.clone());
        issues
    }

    /// Decides `svc`'s addresses (MetalLB's `convergeBalancer`): keeps
    /// what it has while still valid, otherwise allocates anew.
    pub fn update(&mut self, svc: &Service) -> Outcome {
        let Some(service) = service_ref(svc) else {
            return Outcome::NotOurs;
        };
        if !self.settings.selects(svc) {
            self.waiting.remove(&service);
            return if self.ledger.release(&service) {
                Outcome::Released
            } else {
                Outcome::NotOurs
            };
        }
        let req = Request::read(svc, service);
        let outcome = self.converge(&req);
        if matches!(outcome, Outcome::Refused { .. }) {
            self.waiting.insert(req.service);
        } else {
            self.waiting.remove(&req.service);
        }
        outcome
    }

    /// The Service was deleted; true if it held addresses (then retry the
    /// [`Allocator::waiting`] ones).
    pub fn remove(&mut self, namespace: &str, name: &str) -> bool {
        let service = ObjectRef::new("Service", namespace, name);
        self.waiting.remove(&service);
        self.ledger.release(&service)
    }

    /// Addresses in use and in total, per pool, by name.
    pub fn counts(&self) -> Vec<PoolCount> {
        let count = |pool: &Pool, family| FamilyCount {
            in_use: self.ledger.in_use(&pool.name, family),
            total: pool.total(family),
        };
        self.pools
            .iter()
            .map(|pool| PoolCount {
                pool: pool.name.clone(),
                ipv4: count(pool, Family::V4),
                ipv6: count(pool, Family::V6),
            })
            .collect()
    }

    /// The addresses the Service holds (sorted; empty if none).
    pub fn addresses(&self, namespace: &str, name: &str) -> &[IpAddr] {
        let service = ObjectRef::new("Service", namespace, name);
        self.ledger.held(&service).map_or(&[], |h| &h.ips)
    }

    /// The Services holding `ip`, by name.
    pub fn users(&self, ip: IpAddr) -> impl Iterator<Item = &ObjectRef> {
        self.ledger.users(ip)
    }

    /// Services refused by their last update, to retry when addresses are
    /// freed.
    pub fn waiting(&self) -> impl Iterator<Item = &ObjectRef> {
        self.waiting.iter()
    }

    fn converge(&mut self, req: &Request) -> Outcome {
        let held = self.ledger.held(&req.service).cloned();
        // The status stands in for what we hold only when we hold nothing
        // (a Service we never saw): ours is newer than a stale status.
        let current = held.as_ref().map_or(&req.status, |h| &h.ips).clone();
        if !current.is_empty() {
            match self.judge(req, &current, held.as_ref()) {
                Verdict::Keep => {
                    // Ports or keys may have changed, compatibly.
                    self.claim(req, current.clone());
                    let ips = self.add_family(req, current);
                    return self.report(req, ips);
                }
                Verdict::KeepAndRefuse(reason) => {
                    self.claim(req, current.clone());
                    return Outcome::Refused {
                        reason,
                        kept: current,
                    };
                }
                Verdict::Drop => {
                    self.ledger.release(&req.service);
                }
            }
        }
        match self.allocate(req) {
            Ok(ips) => {
                self.claim(req, ips.clone());
                self.report(req, ips)
            }
            Err(reason) => Outcome::Refused {
                reason,
                kept: Vec::new(),
            },
        }
    }

    /// Whether the current addresses are still valid: of the Service's
    /// families, each in a pool that serves it (the one it names, if it
    /// names one), shareable with their other holders, and what it asks
    /// for. An address we hold that a pool edit left in no pool stays
    /// until the Service asks for other addresses (by IP or by naming
    /// another pool than when it got it).
    fn judge(&self, req: &Request, current: &[IpAddr], held: Option<&Held>) -> Verdict {
        if !req.stack.fits(current) {
            return Verdict::Drop;
        }
        let who = self.who(req);
        for &ip in current {
            if self
                .ledger
                .conflict(&req.service, ip, &req.sharing)
                .is_some()
            {
                return Verdict::Drop;
            }
            let mut containing = self.pools.containing(ip).peekable();
            if containing.peek().is_none() {
                match held {
                    Some(held) if req.pool.is_none() || req.pool == held.pool => continue,
                    _ => return Verdict::Drop,
                }
            }
            let serves = |p: &&Pool| {
                p.allows(&who, true) && req.pool.as_ref().is_none_or(|name| *name == p.name)
            };
            if !containing.any(|p| serves(&p)) {
                return Verdict::Drop;
            }
        }
        match &req.ips {
            Err(reason) => Verdict::KeepAndRefuse(reason.clone()),
            Ok(Some(ips)) if ips != current => Verdict::Drop,
            Ok(_) => Verdict::Keep,
        }
    }

    /// PreferDualStack with one address: the other family from the same
    /// pool when it has one free, as MetalLB retries on every update.
    /// Not when the Service asked for its one address by IP.
    fn add_family(&mut self, req: &Request, ips: Vec<IpAddr>) -> Vec<IpAddr> {
        let (
            Stack::Dual {
                required: false, ..
            },
            [ip],
            Ok(None),
        ) = (req.stack, ips.as_slice(), &req.ips)
        else {
            return ips;
        };
        let who = self.who(req);
        let extra = self
            .pools
            .containing(*ip)
            .find(|p| p.allows(&who, true))
            .and_then(|pool| {
                let family = Family::of(*ip).other();
                self.ledger
                    .first_usable(pool, family, &req.service, &req.sharing)
            });
        let Some(extra) = extra else {
            return ips;
        };
        let mut both = vec![*ip, extra];
        both.sort();
        self.claim(req, both.clone());
        both
    }

    /// New addresses for the Service: those it requests, or from the pool
    /// it names, or from the first pool with room among those that serve
    /// it automatically.
    fn allocate(&self, req: &Request) -> Result<Vec<IpAddr>, Refusal> {
        let requested = req.ips.clone()?;
        if self.pools.is_empty() {
            return Err(Refusal::NoPools);
        }
        let who = self.who(req);
        if let Some(ips) = requested {
            return self.take_requested(req, &who, ips);
        }
        if let Some(name) = &req.pool {
            let pool = self
                .pools
                .get(name)
                .ok_or_else(|| Refusal::UnknownPool(name.clone()))?;
            if !pool.allows(&who, false) {
                return Err(Refusal::PoolNotAllowed { pool: name.clone() });
            }
            return self
                .first_fit(&[pool], req)
                .ok_or_else(|| Refusal::PoolExhausted {
                    pool: name.clone(),
                    need: req.stack.into(),
                });
        }
        let tiers = self.pools.automatic(&who);
        if tiers.iter().all(Vec::is_empty) {
            return Err(Refusal::NoPoolForService);
        }
        if let Some(ips) = tiers.iter().find_map(|tier| self.first_fit(tier, req)) {
            return Ok(ips);
        }
        Err(Refusal::NoFreeAddress {
            need: req.stack.into(),
            tried: tiers.iter().flatten().map(|p| p.name.clone()).collect(),
        })
    }

    /// MetalLB's `Assign` for requested addresses: of the Service's
    /// families, in one pool that serves it (autoAssign does not matter),
    /// and shareable.
    fn take_requested(
        &self,
        req: &Request,
        who: &Who,
        ips: Vec<IpAddr>,
    ) -> Result<Vec<IpAddr>, Refusal> {
        let fits = match (req.stack, ips.as_slice()) {
            (Stack::Single(family), [ip]) => Family::of(*ip) == family,
            // Parsing made two addresses of different families.
            (Stack::Dual { .. }, [_, _]) => true,
            _ => false,
        };
        if !fits {
            return Err(Refusal::WrongFamilies {
                requested: ips,
                families: req.stack.families(),
            });
        }
        if let Some(ip) = ips
            .iter()
            .find(|ip| self.pools.containing(**ip).next().is_none())
        {
            return Err(Refusal::NotInAnyPool(*ip));
        }
        let containing: Vec<&Pool> = self
            .pools
            .iter()
            .filter(|p| ips.iter().all(|ip| p.contains(*ip)))
            .collect();
        if containing.is_empty() {
            return Err(Refusal::NotInOnePool(ips));
        }
        let candidates: Vec<&Pool> = match &req.pool {
            Some(name) if self.pools.get(name).is_none() => {
                return Err(Refusal::UnknownPool(name.clone()));
            }
            Some(name) => containing.into_iter().filter(|p| p.name == *name).collect(),
            None => containing,
        };
        let Some(first) = candidates.first() else {
            return Err(Refusal::NotInRequestedPool {
                ips,
                pool: req.pool.clone().unwrap_or_default(),
            });
        };
        if !candidates.iter().any(|p| p.allows(who, false)) {
            return Err(Refusal::PoolNotAllowed {
                pool: first.name.clone(),
            });
        }
        for &ip in &ips {
            if let Some((by, why)) = self.ledger.conflict(&req.service, ip, &req.sharing) {
                return Err(Refusal::InUse { ip, by, why });
            }
        }
        Ok(ips)
    }

    /// MetalLB's `findBestPoolForService` over pools in order: the first
    /// with what the Service needs; for PreferDualStack the first with
    /// both families, else the first with the primary one, else the first
    /// with the other.
    fn first_fit(&self, pools: &[&Pool], req: &Request) -> Option<Vec<IpAddr>> {
        let usable = |pool: &Pool, family| {
            self.ledger
                .first_usable(pool, family, &req.service, &req.sharing)
        };
        match req.stack {
            Stack::Single(family) => pools
                .iter()
                .find_map(|p| usable(p, family))
                .map(|ip| vec![ip]),
            Stack::Dual { primary, required } => {
                let mut fallback: [Option<IpAddr>; 2] = [None, None];
                for pool in pools {
                    let first = usable(pool, primary);
                    let second = usable(pool, primary.other());
                    if let (Some(a), Some(b)) = (first, second) {
                        let mut both = vec![a, b];
                        both.sort();
                        return Some(both);
                    }
                    if !required {
                        fallback = [fallback[0].or(first), fallback[1].or(second)];
                    }
                }
                let [first, second] = fallback;
                first.or(second).map(|ip| vec![ip])
            }
        }
    }

    fn claim(&mut self, req: &Request, ips: Vec<IpAddr>) {
        let pools = &self.pools;
        let held = Held {
            ips,
            pool: req.pool.clone(),
        };
        self.ledger.claim(&req.service, held, &req.sharing, |ip| {
            pools.owner(ip).map(str::to_owned)
        });
    }

    fn report(&self, req: &Request, ips: Vec<IpAddr>) -> Outcome {
        if req.status_exact && req.status == ips {
            Outcome::Unchanged
        } else {
            Outcome::Assigned(ips)
        }
    }

    fn who<'a>(&'a self, req: &'a Request) -> Who<'a> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        let namespace = req.service.namespace.as_str();
        Who {
            namespace,
            namespace_labels: self.namespaces.get(namespace).unwrap_or(&NONE),
            labels: &req.labels,
        }
    }
}
