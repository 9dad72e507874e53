//! What a Service asks for: its IP families, the addresses or pool it
//! requests, how it shares, and what its status shows now.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::refusal::Refusal;
use super::sharing::Sharing;
use crate::eligibility::ObjectRef;

/// Requested addresses, then the deprecated spelling (MetalLB reads both).
pub(super) const LOAD_BALANCER_IPS: [&str; 2] = [
    "metallb.io/loadBalancerIPs",
    "metallb.universe.tf/loadBalancerIPs",
];
/// The pool to allocate from, by name.
pub(super) const ADDRESS_POOL: [&str; 2] = [
    "metallb.io/address-pool",
    "metallb.universe.tf/address-pool",
];

/// The first of `keys` present on the object (present and empty counts,
/// as in MetalLB).
pub(super) fn annotation<'a>(meta: &'a ObjectMeta, keys: &[&str]) -> Option<&'a str> {
    let annotations = meta.annotations.as_ref()?;
    keys.iter()
        .find_map(|k| annotations.get(*k))
        .map(String::as_str)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub(super) fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    pub(super) fn other(self) -> Self {
        match self {
            Self::V4 => Self::V6,
            Self::V6 => Self::V4,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// The addresses a Service needs. MetalLB derives it from `clusterIPs` and
/// `ipFamilyPolicy`; `ipFamilies` says the same (the API server fills both
/// in together) and is read first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stack {
    /// One address of this family.
    Single(Family),
    /// One address per family from one pool; `required` for
    /// RequireDualStack, else PreferDualStack on a dual-stack Service,
    /// which falls back to one family. `primary` is tried first.
    Dual { primary: Family, required: bool },
}

impl Stack {
    fn of(svc: &Service) -> Self {
        let spec = svc.spec.as_ref();
        let named = spec
            .and_then(|s| s.ip_families.as_deref())
            .unwrap_or_default()
            .iter()
            .filter_map(|f| match f.as_str() {
                "IPv4" => Some(Family::V4),
                "IPv6" => Some(Family::V6),
                _ => None,
            });
        let from_cluster_ips = spec
            .and_then(|s| s.cluster_ips.as_deref())
            .unwrap_or_default()
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .map(|ip: IpAddr| Family::of(ip.to_canonical()));
        let mut families: Vec<Family> = named.collect();
        if families.is_empty() {
            families = from_cluster_ips.collect();
        }
        families.dedup();
        // Every LoadBalancer Service has a cluster IP; IPv4 stands in for a
        // Service read without one.
        let primary = families.first().copied().unwrap_or(Family::V4);
        match spec.and_then(|s| s.ip_family_policy.as_deref()) {
            Some("RequireDualStack") => Self::Dual {
                primary,
                required: true,
            },
            Some("PreferDualStack") if families.len() > 1 => Self::Dual {
                primary,
                required: false,
            },
            _ => Self::Single(primary),
        }
    }

    /// Whether `ips` (sorted, distinct) are of the families this needs:
    /// MetalLB's test for a Service whose family changed under it.
    pub(super) fn fits(self, ips: &[IpAddr]) -> bool {
        match (self, ips) {
            (Self::Single(f), [ip]) => Family::of(*ip) == f,
            (Self::Dual { .. }, [a, b]) => Family::of(*a) != Family::of(*b),
            (Self::Dual { required, .. }, [_]) => !required,
            _ => false,
        }
    }

    pub(super) fn families(self) -> Vec<Family> {
        match self {
            Self::Single(f) => vec![f],
            Self::Dual { primary, .. } => vec![primary, primary.other()],
        }
    }
}

/// A Service of ours, read once per update.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub service: ObjectRef,
    pub labels: BTreeMap<String, String>,
    pub stack: Stack,
    /// The addresses asked for, sorted; `Err` when the request is unusable.
    /// Kept unresolved: MetalLB keeps a valid current address when only
    /// the request is broken.
    pub ips: Result<Option<Vec<IpAddr>>, Refusal>,
    /// `metallb.io/address-pool`.
    pub pool: Option<String>,
    pub sharing: Sharing,
    /// The `ip`s of `status.loadBalancer.ingress`, sorted and distinct.
    pub status: Vec<IpAddr>,
    /// The status holds exactly `status`: no bad entry, duplicate or
    /// hostname-only entry that a write would remove.
    pub status_exact: bool,
}

impl Request {
    pub(super) fn read(svc: &Service, service: ObjectRef) -> Self {
        let meta = &svc.metadata;
        let ingress = crate::eligibility::ingress(svc);
        let mut status: Vec<IpAddr> = ingress
            .iter()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .map(|ip: IpAddr| ip.to_canonical())
            .collect();
        status.sort();
        status.dedup();
        Self {
            service,
            labels: meta.labels.clone().unwrap_or_default(),
            stack: Stack::of(svc),
            ips: requested(svc),
            pool: annotation(meta, &ADDRESS_POOL)
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
            sharing: Sharing::of(svc),
            status_exact: status.len() == ingress.len(),
            status,
        }
    }
}

/// The annotation or the legacy `spec.loadBalancerIP`; both only when they
/// ask for the same (MetalLB refuses both even then).
fn requested(svc: &Service) -> Result<Option<Vec<IpAddr>>, Refusal> {
    let listed = annotation(&svc.metadata, &LOAD_BALANCER_IPS).filter(|v| !v.is_empty());
    let legacy = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .filter(|v| !v.is_empty());
    let field = LOAD_BALANCER_IPS[0];
    let listed = listed.map(|v| parse_list(v, field)).transpose()?;
    let legacy = legacy
        .map(|v| parse_ip(v, v, "spec.loadBalancerIP"))
        .transpose()?;
    match (listed, legacy) {
        (Some(listed), Some(legacy)) if listed != [legacy] => Err(Refusal::ConflictingRequests {
            annotation: listed,
            spec: legacy,
        }),
        (Some(ips), _) => Ok(Some(ips)),
        (None, legacy) => Ok(legacy.map(|ip| vec![ip])),
    }
}

/// One address, or one per family (MetalLB: at most two, of different
/// families).
fn parse_list(value: &str, field: &'static str) -> Result<Vec<IpAddr>, Refusal> {
    let mut ips = value
        .split(',')
        .map(|s| parse_ip(s.trim(), value, field))
        .collect::<Result<Vec<_>, _>>()?;
    ips.sort();
    let invalid = |why: &str| Refusal::InvalidRequest {
        field,
        value: value.to_owned(),
        why: why.to_owned(),
    };
    match ips.as_slice() {
        [_] => Ok(ips),
        [a, b] if Family::of(*a) != Family::of(*b) => Ok(ips),
        [_, _] => Err(invalid("two addresses of the same family")),
        _ => Err(invalid("at most one address per family")),
    }
}

fn parse_ip(s: &str, value: &str, field: &'static str) -> Result<IpAddr, Refusal> {
    s.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| Refusal::InvalidRequest {
            field,
            value: value.to_owned(),
            why: format!("{s:?} is not an IP address"),
        })
}
