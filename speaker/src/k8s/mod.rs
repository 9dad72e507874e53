//! Talking to the Kubernetes API: the Leases the agent reads and writes for
//! the election, the watches, and the Events it posts. The resource types
//! MetalLB defines live apart, in `metallb`.

pub mod events;
pub mod leases;
pub mod watch;
