//! Every API access the agent and the controller make, in one list each:
//! what `deploy/` must grant, no more (a test compares the manifests with
//! these lists, and another checks that the requests the processes make
//! against the API stand-in are all in them).

/// Where an access applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Every namespace (or a cluster-scoped resource).
    Cluster,
    /// The process's own namespace (`--namespace`, `speaker-system`).
    Own,
    /// MetalLB's configuration namespace (`--config-namespace`,
    /// `metallb-system`).
    Config,
}

/// One resource, the verbs used on it, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub group: &'static str,
    /// With its subresource, as RBAC names it: `services/status`.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
}

const fn access(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    scope: Scope,
) -> Access {
    Access {
        group,
        resource,
        verbs,
        scope,
    }
}

const WATCHED: &[&str] = &["list", "watch"];
/// kube's event recorder creates an Event, then patches it when it repeats.
const EVENTS: Access = access(
    "events.k8s.io",
    "events",
    &["create", "patch"],
    Scope::Cluster,
);

/// `speaker agent`: the watches behind eligibility, the election's Leases
/// (node lease and VIP records: read afresh, watched, created, replaced),
/// the peer key, and Events on the objects concerned, in their namespaces.
pub const AGENT: &[Access] = &[
    access("", "services", WATCHED, Scope::Cluster),
    access("", "nodes", WATCHED, Scope::Cluster),
    access(
        "discovery.k8s.io",
        "endpointslices",
        WATCHED,
        Scope::Cluster,
    ),
    access("metallb.io", "ipaddresspools", WATCHED, Scope::Config),
    access("metallb.io", "l2advertisements", WATCHED, Scope::Config),
    access(
        "coordination.k8s.io",
        "leases",
        &["get", "list", "watch", "create", "update"],
        Scope::Own,
    ),
    // The agents' shared peer key (`speaker-peer-key`): read, or created
    // by the first agent.
    access("", "secrets", &["get", "create"], Scope::Own),
    // MetalLB's ServiceL2Status: who announces what (k8s/l2status.rs).
    access(
        "metallb.io",
        "servicel2statuses",
        &["list", "create", "delete"],
        Scope::Own,
    ),
    access(
        "metallb.io",
        "servicel2statuses/status",
        &["patch"],
        Scope::Own,
    ),
    EVENTS,
];

/// `speaker controller`: the watches behind allocation, the Service status
/// it writes, the pools' counters, its Lease, and Events.
pub const CONTROLLER: &[Access] = &[
    access("", "services", WATCHED, Scope::Cluster),
    access("", "services/status", &["update"], Scope::Cluster),
    access("", "namespaces", WATCHED, Scope::Cluster),
    access("metallb.io", "ipaddresspools", WATCHED, Scope::Config),
    access(
        "metallb.io",
        "ipaddresspools/status",
        &["patch"],
        Scope::Config,
    ),
    // `list`: the start-up check (a `get` cannot tell a missing Lease
    // from a server without Leases).
    access(
        "coordination.k8s.io",
        "leases",
        &["get", "list", "create", "update"],
        Scope::Own,
    ),
    EVENTS,
];
