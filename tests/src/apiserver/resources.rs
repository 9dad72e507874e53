//! The resources the stand-in serves: one table, so a single generic store
//! and router serve every one of them.

/// A resource as it appears in URLs: API group ("" for core), version and
/// plural name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvr {
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
}

impl Gvr {
    pub const fn new(group: &'static str, version: &'static str, resource: &'static str) -> Self {
        Self {
            group,
            version,
            resource,
        }
    }

    /// `v1` for the core group, else `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name Kubernetes uses in messages: `services`, `leases.coordination.k8s.io`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// The table entry, if the stand-in serves this resource.
    pub fn kind(&self) -> Option<&'static ResourceKind> {
        RESOURCES.iter().find(|r| r.gvr == *self)
    }
}

pub const SERVICES: Gvr = Gvr::new("", "v1", "services");
pub const NODES: Gvr = Gvr::new("", "v1", "nodes");
pub const EVENTS: Gvr = Gvr::new("", "v1", "events");
pub const NAMESPACES: Gvr = Gvr::new("", "v1", "namespaces");
pub const SECRETS: Gvr = Gvr::new("", "v1", "secrets");
pub const ENDPOINT_SLICES: Gvr = Gvr::new("discovery.k8s.io", "v1", "endpointslices");
pub const LEASES: Gvr = Gvr::new("coordination.k8s.io", "v1", "leases");
pub const EVENTS_V1: Gvr = Gvr::new("events.k8s.io", "v1", "events");
pub const IP_ADDRESS_POOLS: Gvr = Gvr::new("metallb.io", "v1beta1", "ipaddresspools");
pub const L2_ADVERTISEMENTS: Gvr = Gvr::new("metallb.io", "v1beta1", "l2advertisements");
pub const SERVICE_L2_STATUSES: Gvr = Gvr::new("metallb.io", "v1beta1", "servicel2statuses");

/// What the store needs to know about a resource.
#[derive(Debug)]
pub struct ResourceKind {
    pub gvr: Gvr,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `/status` subresource: writes to the main resource keep
    /// `.status`, writes to `/status` change only `.status`.
    pub status: bool,
}

const fn res(gvr: Gvr, kind: &'static str, namespaced: bool, status: bool) -> ResourceKind {
    ResourceKind {
        gvr,
        kind,
        namespaced,
        status,
    }
}

pub static RESOURCES: &[ResourceKind] = &[
    res(SERVICES, "Service", true, true),
    res(NODES, "Node", false, true),
    res(EVENTS, "Event", true, false),
    res(NAMESPACES, "Namespace", false, false),
    res(SECRETS, "Secret", true, false),
    res(ENDPOINT_SLICES, "EndpointSlice", true, false),
    res(LEASES, "Lease", true, false),
    res(EVENTS_V1, "Event", true, false),
    res(IP_ADDRESS_POOLS, "IPAddressPool", true, true),
    res(L2_ADVERTISEMENTS, "L2Advertisement", true, true),
    res(SERVICE_L2_STATUSES, "ServiceL2Status", true, true),
];

/// Looks up a resource by the strings of a URL.
pub fn lookup(group: &str, version: &str, resource: &str) -> Option<&'static ResourceKind> {
    RESOURCES
        .iter()
        .find(|r| r.gvr.group == group && r.gvr.version == version && r.gvr.resource == resource)
}
