//! When two Services may use one address (`metallb.io/allow-shared-ip`),
//! as MetalLB's allocator decides it: the same non-empty sharing key, the
//! same backend key, and no port used by both.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::Service;

use super::request::annotation;

/// The sharing annotation, then its deprecated spelling (MetalLB reads both).
pub(super) const ALLOW_SHARED_IP: [&str; 2] = [
    "metallb.io/allow-shared-ip",
    "metallb.universe.tf/allow-shared-ip",
];

/// One port of a Service, as MetalLB compares them: protocol and port
/// number (`TCP/80` and `UDP/80` do not collide).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    pub protocol: String,
    pub port: i32,
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

/// What decides whether a Service may share an address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Sharing {
    /// The `allow-shared-ip` value; empty = shares with nobody.
    pub key: String,
    /// MetalLB's backend key: the pod selector (`k=v,k2=v2`, sorted) for
    /// `externalTrafficPolicy: Local`, empty for `Cluster`. Local Services
    /// must reach the same pods, or one node could not answer for both.
    pub backend: String,
    pub ports: BTreeSet<Port>,
}

impl Sharing {
    pub(super) fn of(svc: &Service) -> Self {
        let spec = svc.spec.as_ref();
        let ports = spec
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|p| Port {
                // The API server defaults the protocol to TCP.
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                port: p.port,
            })
            .collect();
        let local = spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
        let backend = if local {
            let selector = spec.and_then(|s| s.selector.as_ref());
            // A BTreeMap iterates sorted, as Go's labels.Set.String() prints.
            selector
                .iter()
                .flat_map(|s| s.iter())
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            String::new()
        };
        Self {
            key: annotation(&svc.metadata, &ALLOW_SHARED_IP)
                .unwrap_or_default()
                .to_owned(),
            backend,
            ports,
        }
    }
}

/// Why a Service may not use an address another Service holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharingConflict {
    /// The holder has no `allow-shared-ip`.
    HolderDoesNotShare,
    /// This Service has no `allow-shared-ip`.
    DoesNotShare,
    /// Both share, under different keys (the holder's is given; this
    /// Service's is on it).
    DifferentKeys { theirs: String },
    /// Not both `Cluster`, nor both `Local` with the same pod selector.
    TrafficPolicy,
    /// Both use this port.
    PortInUse(Port),
}

impl fmt::Display for SharingConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HolderDoesNotShare => {
                write!(
                    f,
                    "that Service has no metallb.io/allow-shared-ip annotation"
                )
            }
            Self::DoesNotShare => {
                write!(
                    f,
                    "this Service has no metallb.io/allow-shared-ip annotation"
                )
            }
            Self::DifferentKeys { theirs } => write!(
                f,
                "that Service's metallb.io/allow-shared-ip key is {theirs:?}, not this one's"
            ),
            Self::TrafficPolicy => write!(
                f,
                "their externalTrafficPolicy is not compatible (both must be Cluster, \
                 or both Local with the same pod selector)"
            ),
            Self::PortInUse(port) => write!(f, "both use port {port}"),
        }
    }
}

/// Whether the keys let a Service with `ours` join the holders of an
/// address, whose key and backend key are `their_key` and `their_backend`.
/// (Ports are checked after this, as MetalLB does.)
pub(super) fn key_conflict(
    their_key: &str,
    their_backend: &str,
    ours: &Sharing,
) -> Option<SharingConflict> {
    if their_key.is_empty() {
        Some(SharingConflict::HolderDoesNotShare)
    } else if ours.key.is_empty() {
        Some(SharingConflict::DoesNotShare)
    } else if ours.key != their_key {
        Some(SharingConflict::DifferentKeys {
            theirs: their_key.to_owned(),
        })
    } else if ours.backend != their_backend {
        Some(SharingConflict::TrafficPolicy)
    } else {
        None
    }
}
