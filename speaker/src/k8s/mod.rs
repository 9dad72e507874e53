//! Talking to the Kubernetes API: the objects the agent reads (MetalLB's
//! types, which k8s-openapi does not provide), the Leases it reads and
//! writes for the election, and the watches.

pub mod leases;
pub mod metallb;
pub mod watch;
