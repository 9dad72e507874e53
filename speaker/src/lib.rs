//! The speaker: loads the XDP responder, decides which VIPs this node
//! answers for, keeps the data plane's map in step, and announces takeovers.
//!
//! The modes (`static_mode`, `agent`, `controller`) are siblings over
//! shared modules, each configured from `config`; `answer` does the
//! answering for the first two, `allocation` the deciding for the third.

pub mod agent;
pub mod allocation;
pub mod announce;
pub mod answer;
pub mod config;
pub mod controller;
pub mod dataplane;
pub mod election;
pub mod eligibility;
pub mod inspect;
pub mod k8s;
pub mod metallb;
pub mod metrics;
pub mod netdev;
pub mod static_mode;
