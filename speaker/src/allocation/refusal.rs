//! Why a Service gets no address, in words for its owner (the controller
//! puts them in a Warning Event on the Service).

use std::fmt;
use std::net::IpAddr;

use super::request::{Family, Stack};
use super::sharing::SharingConflict;
use crate::eligibility::ObjectRef;

/// What the Service needs from one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// SingleStack (or PreferDualStack on a single-stack Service).
    One(Family),
    /// RequireDualStack.
    Both,
    /// PreferDualStack: both if one pool has them, else either.
    Either,
}

impl From<Stack> for Need {
    fn from(stack: Stack) -> Self {
        match stack {
            Stack::Single(f) => Self::One(f),
            Stack::Dual { required: true, .. } => Self::Both,
            Stack::Dual {
                required: false, ..
            } => Self::Either,
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::One(family) => write!(f, "a free {family} address"),
            Self::Both => write!(f, "a free IPv4 address together with a free IPv6 address"),
            Self::Either => write!(f, "a free IPv4 or IPv6 address"),
        }
    }
}

/// Why a Service gets no (new) address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No IPAddressPool exists.
    NoPools,
    /// A request that does not parse, or asks for what no Service can have.
    InvalidRequest {
        field: &'static str,
        value: String,
        why: String,
    },
    /// `metallb.io/loadBalancerIPs` and `spec.loadBalancerIP` disagree.
    ConflictingRequests {
        annotation: Vec<IpAddr>,
        spec: IpAddr,
    },
    /// The requested addresses are not one per IP family of the Service.
    WrongFamilies {
        requested: Vec<IpAddr>,
        families: Vec<Family>,
    },
    /// A requested address is in no pool.
    NotInAnyPool(IpAddr),
    /// The requested addresses are in different pools.
    NotInOnePool(Vec<IpAddr>),
    /// `metallb.io/address-pool` names no pool.
    UnknownPool(String),
    /// The requested addresses are not in the pool the Service names.
    NotInRequestedPool { ips: Vec<IpAddr>, pool: String },
    /// The pool's `serviceAllocation` does not include this Service.
    PoolNotAllowed { pool: String },
    /// A requested address is held by a Service it cannot be shared with.
    InUse {
        ip: IpAddr,
        by: ObjectRef,
        why: SharingConflict,
    },
    /// The pool the Service names (by name) has nothing left for it.
    PoolExhausted { pool: String, need: Need },
    /// No pool may give this Service an address without being asked.
    NoPoolForService,
    /// Every pool that may serve the Service is exhausted for it.
    NoFreeAddress { need: Need, tried: Vec<String> },
}

fn list(ips: &[IpAddr]) -> String {
    let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
    ips.join(", ")
}

fn dual_prefix(need: Need) -> &'static str {
    if need == Need::Both {
        "RequireDualStack cannot be met: "
    } else {
        ""
    }
}

impl Refusal {
    /// A short stable name, for the `reason` label of
    /// `speaker_allocation_refusals_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoPools => "no_pools",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::ConflictingRequests { .. } => "conflicting_requests",
            Self::WrongFamilies { .. } => "wrong_families",
            Self::NotInAnyPool(_) => "not_in_any_pool",
            Self::NotInOnePool(_) => "not_in_one_pool",
            Self::UnknownPool(_) => "unknown_pool",
            Self::NotInRequestedPool { .. } => "not_in_requested_pool",
            Self::PoolNotAllowed { .. } => "pool_not_allowed",
            Self::InUse { .. } => "in_use",
            Self::PoolExhausted { .. } => "pool_exhausted",
            Self::NoPoolForService => "no_pool_for_service",
            Self::NoFreeAddress { .. } => "no_free_address",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPools => write!(f, "no IPAddressPool is configured"),
            Self::InvalidRequest { field, value, why } => {
                write!(f, "{field} {value:?} is invalid: {why}")
            }
            Self::ConflictingRequests { annotation, spec } => write!(
                f,
                "annotation metallb.io/loadBalancerIPs asks for {} but spec.loadBalancerIP \
                 asks for {spec}; set only one of them",
                list(annotation)
            ),
            Self::WrongFamilies {
                requested,
                families,
            } => {
                let families: Vec<String> = families.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "requested {} but the Service needs one address for each of its IP \
                     families ({})",
                    list(requested),
                    families.join(", ")
                )
            }
            Self::NotInAnyPool(ip) => write!(
                f,
                "requested address {ip} is in no IPAddressPool (pools leave out the network \
                 and broadcast addresses of IPv4 CIDRs, and addresses ending in .0 and .255 \
                 when they avoid buggy IPs)"
            ),
            Self::NotInOnePool(ips) => write!(
                f,
                "requested addresses {} are not in one IPAddressPool",
                list(ips)
            ),
            Self::UnknownPool(pool) => write!(
                f,
                "IPAddressPool {pool:?} named by metallb.io/address-pool does not exist"
            ),
            Self::NotInRequestedPool { ips, pool } => write!(
                f,
                "requested {} not in IPAddressPool {pool:?} named by metallb.io/address-pool",
                list(ips)
            ),
            Self::PoolNotAllowed { pool } => write!(
                f,
                "IPAddressPool {pool:?} does not serve this Service (its serviceAllocation \
                 selects other namespaces or Services)"
            ),
            Self::InUse { ip, by, why } => {
                write!(
                    f,
                    "address {ip} is in use by {by} and cannot be shared: {why}"
                )
            }
            Self::PoolExhausted { pool, need } => write!(
                f,
                "{}IPAddressPool {pool:?} has no {} left for this Service",
                dual_prefix(*need),
                need.to_string().trim_start_matches("a ")
            ),
            Self::NoPoolForService => write!(
                f,
                "no IPAddressPool assigns addresses to this Service automatically \
                 (autoAssign is false or serviceAllocation selects other namespaces or \
                 Services); name one with metallb.io/address-pool or request an address"
            ),
            Self::NoFreeAddress { need, tried } => write!(
                f,
                "{}no IPAddressPool has {need} left for this Service (pools tried: {})",
                dual_prefix(*need),
                tried.join(", ")
            ),
        }
    }
}
