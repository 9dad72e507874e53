//! The speaker agent: loads the XDP responder, decides which VIPs this node
//! answers for, keeps the data plane's map in step, and announces takeovers.

pub mod agent;
pub mod announce;
pub mod config;
pub mod dataplane;
pub mod election;
pub mod eligibility;
pub mod k8s;
pub mod metrics;
pub mod netdev;
pub mod static_mode;
