//! Request counters, to measure the load a client puts on the API.

use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every request, watches included.
    pub requests: u64,
    /// POST, PUT, PATCH and DELETE.
    pub writes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub total: Counts,
    /// By resource as Kubernetes names it in messages: `services`, `nodes`,
    /// `leases.coordination.k8s.io`, `ipaddresspools.metallb.io`.
    pub by_resource: BTreeMap<String, Counts>,
}

impl Stats {
    /// The counts of one resource (zero when it saw no request).
    pub fn resource(&self, name: &str) -> Counts {
        self.by_resource.get(name).copied().unwrap_or_default()
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
