//! Request counters, to measure the load a client puts on the API.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every request, watches included.
    pub requests: u64,
    /// POST, PUT, PATCH and DELETE.
    pub writes: u64,
}

/// One kind of request, as RBAC sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    pub group: String,
    /// With `/status` for the status subresource.
    pub resource: String,
    pub verb: &'static str,
    /// `None` for a cluster-wide request.
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub total: Counts,
    /// Every kind of request seen, for checking RBAC.
    pub accesses: BTreeSet<Access>,
    /// By resource as Kubernetes names it in messages: `services`, `nodes`,
    /// `leases.coordination.k8s.io`, `ipaddresspools.metallb.io`.
    pub by_resource: BTreeMap<String, Counts>,
}

impl Stats {
    /// The counts of one resource (zero when it saw no request).
    pub fn resource(&self, name: &str) -> Counts {
        self.by_resource.get(name).copied().unwrap_or_default()
    }

    pub(crate) fn accessed(&mut self, access: Access) {
        self.accesses.insert(access);
    }

    pub(crate) fn count(&mut self, resource: Option<String>, write: bool) {
        let add = |c: &mut Counts| {
            c.requests += 1;
            c.writes += u64::from(write);
        };
        add(&mut self.total);
        if let Some(r) = resource {
            add(self.by_resource.entry(r).or_default());
        }
    }
}
