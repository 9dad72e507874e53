//! Before anything else: does the API server serve every resource this
//! process needs? A missing one would otherwise show up as a watch that
//! retries forever in the logs and VIPs that never appear.

use std::time::Duration;

use anyhow::{Result, bail};
use kube::{
    Client,
    api::{ApiResource, DynamicObject, ListParams},
};
use tracing::warn;

/// A resource this process lists or watches, and what a user must do when
/// the server has not got it.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// Listed in one namespace rather than cluster-wide, as it is used.
    pub namespaced: bool,
    pub remedy: &'static str,
}

const fn need(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    remedy: &'static str,
) -> Need {
    Need {
        group,
        version,
        kind,
        plural,
        namespaced,
        remedy,
    }
}

const CRDS: &str = "apply MetalLB's CRDs first (deploy/crds/, or MetalLB's own)";

pub const SERVICES: Need = need("", "v1", "Service", "services", false, "");
pub const NAMESPACES: Need = need("", "v1", "Namespace", "namespaces", false, "");
pub const NODES: Need = need("", "v1", "Node", "nodes", false, "");
pub const ENDPOINT_SLICES: Need = need(
    "discovery.k8s.io",
    "v1",
    "EndpointSlice",
    "endpointslices",
    false,
    "this speaker needs Kubernetes 1.21 or later",
);
pub const LEASES: Need = need(
    "coordination.k8s.io",
    "v1",
    "Lease",
    "leases",
    true,
    "this speaker needs Kubernetes 1.14 or later",
);
pub const IP_ADDRESS_POOLS: Need = need(
    "metallb.io",
    "v1beta1",
    "IPAddressPool",
    "ipaddresspools",
    true,
    CRDS,
);
pub const L2_ADVERTISEMENTS: Need = need(
    "metallb.io",
    "v1beta1",
    "L2Advertisement",
    "l2advertisements",
    true,
    CRDS,
);

/// What went wrong with one need.
enum Check {
    Missing,
    Retry(kube::Error),
}

impl Need {
    fn api_version(&self) -> String {
        match self.group {
            "" => self.version.to_owned(),
            group => format!("{group}/{}", self.version),
        }
    }

    /// Lists at most one object, the cheapest request that proves the
    /// resource is served and readable.
    async fn check(&self, client: &Client, namespace: &str) -> Result<(), Check> {
        let resource = ApiResource {
            group: self.group.to_owned(),
            version: self.version.to_owned(),
            api_version: self.api_version(),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        };
        let api = if self.namespaced {
            kube::Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        } else {
            kube::Api::<DynamicObject>::all_with(client.clone(), &resource)
        };
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Err(Check::Missing),
            Err(e) => Err(Check::Retry(e)),
        }
    }
}

/// Returns once every need is served: at once with an error naming the
/// remedy when the server has not got one (404), after retrying while the
/// server cannot be reached or refuses (RBAC not applied yet, 5xx).
/// `namespace` is where the namespaced needs are listed.
pub async fn check(client: &Client, needs: &[(Need, &str)]) -> Result<()> {
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut retry = None;
        for (need, namespace) in needs {
            match need.check(client, namespace).await {
                Ok(()) => {}
                Err(Check::Missing) => bail!(
                    "the API server does not serve {} {}s ({}): {}",
                    need.api_version(),
                    need.kind,
                    need.plural,
                    need.remedy
                ),
                Err(Check::Retry(e)) => retry = Some((need, e)),
            }
        }
        let Some((need, error)) = retry else {
            return Ok(());
        };
        warn!(resource = need.plural, %error,
            "cannot list {}s yet; retrying", need.kind);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
