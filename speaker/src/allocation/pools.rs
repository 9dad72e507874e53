//! IPAddressPools as the allocator uses them: address ranges, whether they
//! assign automatically, which Services they serve, in which order they
//! are tried, and how many addresses they hold.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::request::Family;
use crate::eligibility::addresses::AddrRange;
use crate::eligibility::selectors::Selection;
use crate::eligibility::{Issue, ObjectRef};
use crate::metallb::{IPAddressPool, ServiceAllocation, unsupported_field};

/// An IPv4 address ending in .0 or .255, which old CPE firmware drops as
/// smurf protection (`avoidBuggyIPs`).
pub(super) fn buggy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => matches!(a.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

/// The Service a pool is asked to serve.
pub(super) struct Who<'a> {
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
}

/// `serviceAllocation`'s restrictions.
#[derive(Debug)]
enum Access {
    /// No namespaces, namespace selectors nor Service selectors.
    Everyone,
    Restricted {
        /// `namespaces` and `namespaceSelectors`; `None` when both are
        /// empty (any namespace).
        namespaces: Option<(BTreeSet<String>, Selection)>,
        /// `serviceSelectors`; `None` when empty (any Service).
        services: Option<Selection>,
    },
    /// `serviceAllocation` does not parse: the pool takes no new Service
    /// (fail closed) but lets the ones it has keep their addresses.
    Unreadable,
}

impl Access {
    fn parse(alloc: &ServiceAllocation, report: &mut impl FnMut(String)) -> Self {
        let mut selection = |list: &[LabelSelector], field| {
            // An empty list restricts nothing, where Selection reads "all".
            if list.is_empty() {
                return None;
            }
            let (selection, errors) = Selection::parse(list, field);
            errors.into_iter().for_each(&mut *report);
            Some(selection)
        };
        let by_labels = selection(
            &alloc.namespace_selectors,
            "serviceAllocation.namespaceSelectors",
        );
        let services = selection(
            &alloc.service_selectors,
            "serviceAllocation.serviceSelectors",
        );
        let namespaces = (!alloc.namespaces.is_empty() || by_labels.is_some()).then(|| {
            let names = alloc.namespaces.iter().cloned().collect();
            (names, by_labels.unwrap_or(Selection::AnyOf(Vec::new())))
        });
        if namespaces.is_none() && services.is_none() {
            Self::Everyone
        } else {
            Self::Restricted {
                namespaces,
                services,
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct Pool {
    pub name: String,
    /// In the order listed: MetalLB tries them in that order.
    ranges: Vec<AddrRange>,
    pub auto_assign: bool,
    pub avoid_buggy: bool,
    /// `serviceAllocation.priority` when above 0 (MetalLB reads 0 as unset).
    priority: Option<i32>,
    access: Access,
    totals: [u128; 2],
}

impl Pool {
    pub(super) fn contains(&self, ip: IpAddr) -> bool {
        !(self.avoid_buggy && buggy(ip)) && self.ranges.iter().any(|r| r.contains(ip))
    }

    pub(super) fn ranges(&self, family: Family) -> impl Iterator<Item = &AddrRange> {
        self.ranges
            .iter()
            .filter(move |r| Family::of(r.start()) == family)
    }

    pub(super) fn total(&self, family: Family) -> u128 {
        self.totals[family as usize]
    }

    /// Whether the pool serves `who`. A pool whose `serviceAllocation` is
    /// unreadable serves only Services that already hold its addresses.
    pub(super) fn allows(&self, who: &Who, keeping: bool) -> bool {
        match &self.access {
            Access::Everyone => true,
            Access::Unreadable => keeping,
            Access::Restricted {
                namespaces,
                services,
            } => {
                let namespace_ok = namespaces.as_ref().is_none_or(|(names, selection)| {
                    names.contains(who.namespace) || selection.matches(who.namespace_labels)
                });
                namespace_ok && services.as_ref().is_none_or(|s| s.matches(who.labels))
            }
        }
    }

    /// MetalLB tries the pools restricted to a Service ("pinned") before
    /// the ones open to all.
    fn pinned(&self) -> bool {
        matches!(self.access, Access::Restricted { .. })
    }

    fn parse(pool: &IPAddressPool, issues: &mut Vec<Issue>) -> Option<Self> {
        let name = pool.metadata.name.as_deref()?;
        let namespace = pool.metadata.namespace.as_deref().unwrap_or_default();
        let object = ObjectRef::new("IPAddressPool", namespace, name);
        let mut report = |message: String| {
            issues.push(Issue {
                object: object.clone(),
                message,
            })
        };
        let spec = &pool.spec;
        for path in spec.unsupported() {
            report(unsupported_field(&path));
        }
        let mut ranges = Vec::new();
        for entry in &spec.addresses {
            match AddrRange::parse(entry) {
                Ok(r) => ranges.push(r),
                Err(e) => report(format!("bad address entry {entry:?}: {e}")),
            }
        }
        let (priority, access) = match spec.service_allocation() {
            Ok(None) => (None, Access::Everyone),
            Ok(Some(alloc)) => (
                alloc.priority.filter(|p| *p > 0),
                Access::parse(&alloc, &mut report),
            ),
            Err(e) => {
                report(format!(
                    "serviceAllocation is unreadable ({e}): the pool assigns no new address \
                     until it is fixed"
                ));
                (None, Access::Unreadable)
            }
        };
        let avoid_buggy = spec.avoid_buggy_i_ps.unwrap_or(false);
        let totals = [Family::V4, Family::V6].map(|f| total(&ranges, f, avoid_buggy));
        Some(Self {
            name: name.to_owned(),
            ranges,
            auto_assign: spec.auto_assign.unwrap_or(true),
            avoid_buggy,
            priority,
            access,
            totals,
        })
    }
}

/// The number of addresses of `family` in the union of `ranges`, by
/// arithmetic (an IPv6 /64 is never enumerated); saturates at `u128::MAX`.
fn total(ranges: &[AddrRange], family: Family, avoid_buggy: bool) -> u128 {
    let mut spans: Vec<(u128, u128)> = ranges
        .iter()
        .filter(|r| Family::of(r.start()) == family)
        .map(|r| (to_u128(r.start()), to_u128(r.end())))
        .collect();
    spans.sort();
    // Overlapping entries count once.
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged.iter().fold(0u128, |sum, &(start, end)| {
        let mut n = (end - start).saturating_add(1);
        if avoid_buggy && family == Family::V4 {
            n -= buggy_up_to(end) - start.checked_sub(1).map_or(0, buggy_up_to);
        }
        sum.saturating_add(n)
    })
}

/// How many IPv4 addresses in 0..=n end in .0 or .255.
fn buggy_up_to(n: u128) -> u128 {
    (n / 256 + 1) + (n + 1) / 256
}

pub(super) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => a.into(),
    }
}

/// Every usable pool, by name.
#[derive(Debug, Default)]
pub(super) struct Pools(BTreeMap<String, Pool>);

impl Pools {
    /// Unnamed pools are skipped; of two with one name (in different
    /// namespaces: only the config namespace should be given) the first
    /// by namespace wins and the other is reported.
    pub(super) fn parse(pools: &[IPAddressPool]) -> (Self, Vec<Issue>) {
        let mut sorted: Vec<&IPAddressPool> = pools.iter().collect();
        sorted.sort_by_key(|p| (&p.metadata.name, &p.metadata.namespace));
        let mut issues = Vec::new();
        let mut out = BTreeMap::new();
        for pool in sorted {
            let Some(parsed) = Pool::parse(pool, &mut issues) else {
                continue;
            };
            if out.contains_key(&parsed.name) {
                issues.push(Issue {
                    object: ObjectRef::new(
                        "IPAddressPool",
                        pool.metadata.namespace.as_deref().unwrap_or_default(),
                        &parsed.name,
                    ),
                    message: "another IPAddressPool has the same name; this one is ignored"
                        .to_owned(),
                });
                continue;
            }
            out.insert(parsed.name.clone(), parsed);
        }
        (Self(out), issues)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn get(&self, name: &str) -> Option<&Pool> {
        self.0.get(name)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Pool> {
        self.0.values()
    }

    /// The pools containing `ip`, by name.
    pub(super) fn containing(&self, ip: IpAddr) -> impl Iterator<Item = &Pool> {
        self.0.values().filter(move |p| p.contains(ip))
    }

    /// The pool an address in use is counted in (the first by name when
    /// pools overlap).
    pub(super) fn owner(&self, ip: IpAddr) -> Option<&str> {
        self.containing(ip).next().map(|p| p.name.as_str())
    }

    /// The pools that may give `who` an address unasked, in the order
    /// MetalLB tries them: the pinned ones (restricted to Services that
    /// `who` is one of), then the others; within each, by priority (unset
    /// last), then by name where MetalLB's order is undefined.
    pub(super) fn automatic(&self, who: &Who) -> [Vec<&Pool>; 2] {
        let mut tiers: [Vec<&Pool>; 2] = [Vec::new(), Vec::new()];
        for pool in self.0.values() {
            if pool.auto_assign && pool.allows(who, false) {
                tiers[usize::from(!pool.pinned())].push(pool);
            }
        }
        for tier in &mut tiers {
            // Stable: ties stay in name order.
            tier.sort_by_key(|p| (p.priority.is_none(), p.priority));
        }
        tiers
    }
}
