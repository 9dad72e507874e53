//! Talking to the Kubernetes API.

pub mod metallb;
