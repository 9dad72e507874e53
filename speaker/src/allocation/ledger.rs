//! Who holds which address. Every lookup is a B-tree search, so one
//! Service's allocation or release costs O(log n) in the number of
//! addresses in use, never a walk over a pool's addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::pools::{Pool, buggy};
use super::request::Family;
use super::sharing::{self, Port, Sharing, SharingConflict};
use crate::eligibility::ObjectRef;
use crate::eligibility::addresses::AddrRange;

/// What a Service holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Held {
    /// Sorted, distinct.
    pub ips: Vec<IpAddr>,
    /// The pool it named (`metallb.io/address-pool`) when it got them: a
    /// new name is a request for other addresses.
    pub pool: Option<String>,
}

/// One address in use.
#[derive(Debug)]
struct Use {
    users: BTreeSet<ObjectRef>,
    /// The users' sharing and backend keys: equal for all of them, since
    /// only compatible Services join.
    key: String,
    backend: String,
    ports: BTreeMap<Port, ObjectRef>,
    /// The pool it is counted in; `None` when it is in no pool.
    pool: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Ledger {
    held: BTreeMap<ObjectRef, Held>,
    ips: BTreeMap<IpAddr, Use>,
    /// Maximal runs of consecutive addresses in use, first → last: the
    /// first free address from any point is one lookup away.
    runs: BTreeMap<IpAddr, IpAddr>,
    /// Addresses in use under each sharing key: the only used addresses a
    /// Service with that key may join.
    shared: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Addresses in use per pool and family.
    in_use: BTreeMap<String, [u64; 2]>,
}

fn step(ip: IpAddr, up: bool) -> Option<IpAddr> {
    let next = |n: u128, max: u128| match up {
        true => n.checked_add(1).filter(|&m| m <= max),
        false => n.checked_sub(1),
    };
    match ip {
        IpAddr::V4(a) => next(u32::from(a).into(), u32::MAX.into())
            .and_then(|n| u32::try_from(n).ok())
            .map(|n| IpAddr::from(std::net::Ipv4Addr::from(n))),
        IpAddr::V6(a) => {
            next(u128::from(a), u128::MAX).map(|n| IpAddr::from(std::net::Ipv6Addr::from(n)))
        }
    }
}

impl Ledger {
    pub(super) fn held(&self, service: &ObjectRef) -> Option<&Held> {
        self.held.get(service)
    }

    pub(super) fn users(&self, ip: IpAddr) -> impl Iterator<Item = &ObjectRef> {
        self.ips.get(&ip).into_iter().flat_map(|u| u.users.iter())
    }

    pub(super) fn in_use(&self, pool: &str, family: Family) -> u64 {
        self.in_use.get(pool).map_or(0, |c| c[family as usize])
    }

    /// Addresses in use that are in no pool, each with its users.
    pub(super) fn outside_pools(&self) -> impl Iterator<Item = (IpAddr, &BTreeSet<ObjectRef>)> {
        self.ips
            .iter()
            .filter(|(_, u)| u.pool.is_none())
            .map(|(ip, u)| (*ip, &u.users))
    }

    /// Why `service` (with `sharing`) may not use `ip`, naming a Service
    /// in the way; `None` if it may. Its own use of `ip` never counts.
    pub(super) fn conflict(
        &self,
        service: &ObjectRef,
        ip: IpAddr,
        sharing: &Sharing,
    ) -> Option<(ObjectRef, SharingConflict)> {
        let used = self.ips.get(&ip)?;
        let other = used.users.iter().find(|u| *u != service)?;
        if let Some(why) = sharing::key_conflict(&used.key, &used.backend, sharing) {
            return Some((other.clone(), why));
        }
        sharing.ports.iter().find_map(|port| {
            let holder = used.ports.get(port).filter(|h| *h != service)?;
            Some((holder.clone(), SharingConflict::PortInUse(port.clone())))
        })
    }

    /// The first address of `family` in `pool`, in its order, that
    /// `service` may take: free, or held by Services it may share with.
    pub(super) fn first_usable(
        &self,
        pool: &Pool,
        family: Family,
        service: &ObjectRef,
        sharing: &Sharing,
    ) -> Option<IpAddr> {
        pool.ranges(family).find_map(|range| {
            let free = self.first_free(range, pool.avoid_buggy);
            let shared = self.first_shareable(range, pool.avoid_buggy, service, sharing);
            match (free, shared) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        })
    }

    fn first_free(&self, range: &AddrRange, avoid_buggy: bool) -> Option<IpAddr> {
        let mut ip = range.start();
        // Each turn jumps a whole run or one .0/.255 address, and runs are
        // maximal, so this ends after a few turns.
        while ip <= range.end() {
            if let Some((_, last)) = self.runs.range(..=ip).next_back()
                && *last >= ip
            {
                ip = step(*last, true)?;
            } else if avoid_buggy && buggy(ip) {
                ip = step(ip, true)?;
            } else {
                return Some(ip);
            }
        }
        None
    }

    fn first_shareable(
        &self,
        range: &AddrRange,
        avoid_buggy: bool,
        service: &ObjectRef,
        sharing: &Sharing,
    ) -> Option<IpAddr> {
        let keyed = self.shared.get(&sharing.key)?;
        keyed
            .range(range.start()..=range.end())
            .copied()
            .find(|ip| {
                !(avoid_buggy && buggy(*ip)) && self.conflict(service, *ip, sharing).is_none()
            })
    }

    /// Records that `service` holds `held`, replacing what it held. The
    /// caller has checked [`Ledger::conflict`] for each address.
    pub(super) fn claim(
        &mut self,
        service: &ObjectRef,
        held: Held,
        sharing: &Sharing,
        owner: impl Fn(IpAddr) -> Option<String>,
    ) {
        self.release(service);
        for &ip in &held.ips {
            let used = match self.ips.entry(ip) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let pool = owner(ip);
                    if let Some(pool) = &pool {
                        self.in_use.entry(pool.clone()).or_default()[Family::of(ip) as usize] += 1;
                    }
                    if !sharing.key.is_empty() {
                        self.shared
                            .entry(sharing.key.clone())
                            .or_default()
                            .insert(ip);
                    }
                    insert_run(&mut self.runs, ip);
                    e.insert(Use {
                        users: BTreeSet::new(),
                        key: sharing.key.clone(),
                        backend: sharing.backend.clone(),
                        ports: BTreeMap::new(),
                        pool,
                    })
                }
            };
            used.users.insert(service.clone());
            for port in &sharing.ports {
                used.ports.insert(port.clone(), service.clone());
            }
        }
        self.held.insert(service.clone(), held);
    }

    /// Frees what `service` holds; false if it held nothing.
    pub(super) fn release(&mut self, service: &ObjectRef) -> bool {
        let Some(held) = self.held.remove(service) else {
            return false;
        };
        for ip in held.ips {
            let Some(used) = self.ips.get_mut(&ip) else {
                continue;
            };
            used.users.remove(service);
            used.ports.retain(|_, holder| holder != service);
            if !used.users.is_empty() {
                continue;
            }
            if let Some(used) = self.ips.remove(&ip) {
                if let Some(pool) = &used.pool
                    && let Some(count) = self.in_use.get_mut(pool)
                {
                    count[Family::of(ip) as usize] -= 1;
                }
                if let Some(keyed) = self.shared.get_mut(&used.key) {
                    keyed.remove(&ip);
                    if keyed.is_empty() {
                        self.shared.remove(&used.key);
                    }
                }
            }
            remove_run(&mut self.runs, ip);
        }
        true
    }

    /// Counts every address in use again in its pool, after a pool change.
    pub(super) fn recount(&mut self, owner: impl Fn(IpAddr) -> Option<String>) {
        self.in_use.clear();
        for (ip, used) in &mut self.ips {
            used.pool = owner(*ip);
            if let Some(pool) = &used.pool {
                self.in_use.entry(pool.clone()).or_default()[Family::of(*ip) as usize] += 1;
            }
        }
    }

    /// For the tests: the runs match the addresses in use.
    #[cfg(test)]
    pub(super) fn check_runs(&self) {
        let mut expected: BTreeMap<IpAddr, IpAddr> = BTreeMap::new();
        let mut last: Option<(IpAddr, IpAddr)> = None;
        for ip in self.ips.keys().copied() {
            last = match last {
                Some((first, end)) if step(end, true) == Some(ip) => Some((first, ip)),
                Some((first, end)) => {
                    expected.insert(first, end);
                    Some((ip, ip))
                }
                None => Some((ip, ip)),
            };
        }
        if let Some((first, end)) = last {
            expected.insert(first, end);
        }
        assert_eq!(
            self.runs, expected,
            "runs out of step with the addresses in use"
        );
    }
}

fn insert_run(runs: &mut BTreeMap<IpAddr, IpAddr>, ip: IpAddr) {
    let mut first = ip;
    let mut last = ip;
    if let Some(before) = step(ip, false)
        && let Some((start, end)) = runs.range(..=before).next_back()
        && *end == before
    {
        first = *start;
    }
    if let Some(after) = step(ip, true)
        && let Some(end) = runs.remove(&after)
    {
        last = end;
    }
    runs.insert(first, last);
}

fn remove_run(runs: &mut BTreeMap<IpAddr, IpAddr>, ip: IpAddr) {
    let Some((&first, &last)) = runs.range(..=ip).next_back() else {
        return;
    };
    if last < ip {
        return;
    }
    runs.remove(&first);
    if first < ip
        && let Some(before) = step(ip, false)
    {
        runs.insert(first, before);
    }
    if ip < last
        && let Some(after) = step(ip, true)
    {
        runs.insert(after, last);
    }
}
